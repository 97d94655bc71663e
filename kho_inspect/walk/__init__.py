"""drgn helpers: what the kernel itself holds about KHO, read with its DWARF.

Functions take the :class:`drgn.Program` first, probe for types and members
(never version numbers), and raise :class:`~kho_inspect.errors.KhoError`
with one readable line when the kernel or its debug info lacks something.
"""

from .fdt import (bitmap_bytes, incoming_fdt_phys, is_finalized,  # noqa: F401
                  kho_in, kho_out, outgoing_fdt_phys)
