"""`tools/agent --romfs`: the agent with its .mpy files on a ROMFS image, as a
board runs code from a ROMFS partition: bytecode and the text of names are used
in place, so only objects, qstr pool entries and code headers take heap.

The unix port has no memory-mapped flash: the image (path in the environment
variable CHARGEPILOT_ROMFS) is read into one heap block first, and logged, so
that its size can be subtracted from a heap figure. Everything else is
tools/agent_main.py unchanged.
"""

import gc
import os
import sys

import vfs

_image = os.getenv("CHARGEPILOT_ROMFS")
_buf = bytearray(os.stat(_image)[6])
with open(_image, "rb") as _f:
    _f.readinto(_buf)
vfs.mount(vfs.VfsRom(_buf), "/rom")
sys.path[:] = ["/rom/lib", "/rom/host", ".frozen", sys.path[0]]  # [0]: tools/
gc.collect()
sys.stderr.write("romfs: image of %d bytes mounted at /rom\n" % len(_buf))

import agent_main  # noqa: E402  (after the mount: its imports come from /rom)

sys.exit(agent_main.main())
