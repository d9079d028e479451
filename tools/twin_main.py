"""`tools/agent --twin`: the board twin has tools/agent_main.py frozen into it
(tools/twin_manifest.py), as ESP32 firmware freezes its code: importing it uses
the bytecode in place instead of compiling ~370 lines into the heap (about
5 KB that stayed for the agent's life, plus the compiler's peak at start).
Everything else is tools/agent_main.py unchanged."""

import sys

import agent_main

sys.exit(agent_main.main())
