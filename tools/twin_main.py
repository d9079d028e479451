"""`tools/agent --twin`: the board twin has tools/agent_main.py frozen into it
(tools/twin_manifest.py), as ESP32 firmware freezes its code: importing it uses
the bytecode in place instead of compiling ~370 lines into the heap (about
5 KB that stayed for the agent's life, plus the compiler's peak at start).
Everything else is tools/agent_main.py unchanged."""

import sys

# sys.path[0] is this script's folder (tools/), where agent_main.py also lies as
# source: the frozen module must win, as on a board.
if ".frozen" in sys.path:
    sys.path.remove(".frozen")
sys.path.insert(0, ".frozen")

import agent_main  # noqa: E402

sys.exit(agent_main.main())
