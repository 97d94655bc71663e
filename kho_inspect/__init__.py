"""kho_inspect: three views of Linux Kexec HandOver (KHO) state.

Layers, bottom up: :mod:`.abi` (pure ABI facts) -> :mod:`.fdt`, :mod:`.bits`,
:mod:`.ranges`, :mod:`.memory`, :mod:`.image` (parsing and memory sources) ->
:mod:`.decode` (reference decoder), :mod:`.walk` (drgn walker) -> :mod:`.check`
-> :mod:`.cli`. No module imports from a layer above its own.
"""

__version__ = "0.1.0"
