"""drgn helpers: what the kernel itself holds about KHO, read with its DWARF.

Functions take the :class:`drgn.Program` first, probe for types and members
(never version numbers), and raise :class:`~kho_inspect.errors.KhoError`
with one readable line when the kernel or its debug info lacks something.
Usable interactively::

    $ drgn -k            # or: drgn -c vmcore -s vmlinux
    >>> from kho_inspect.walk import *
    >>> outgoing_tracker(prog).layout
    'radix'

* :mod:`.fdt` - ``kho_out``/``kho_in``, the FDT pointers, finalize state.
* :mod:`.tracker` - the outgoing tracker (kho-v1 xarrays, radix tree).
* :mod:`.state` - ``kho_enable``, scratch areas, the kexec image, ``kho_in``.
* :mod:`.incoming` - preserved head pages still carrying their marker.
* :mod:`.views` - the documents ``status``/``tracker``/``incoming`` print.
"""

from .fdt import (bitmap_bytes, incoming_fdt_phys, is_finalized,  # noqa: F401
                  kho_in, kho_out, outgoing_fdt_phys)
from .incoming import (MarkerScan, has_page_magic,  # noqa: F401
                       memblock_reserved, preserved_markers, scan_markers)
from .state import (IncomingState, ScratchArea, incoming_state,  # noqa: F401
                    kexec_image_kho, kho_enabled, scratch_areas)
from .tracker import (Tracker, outgoing_tracker, tracker_layout,  # noqa: F401
                      walk_radix_tree, walk_xarray_tracker)
