"""The reference decoder: KHO state from raw physical memory and the ABI
alone, no debug info.

* :mod:`.model` - what a decode returns.
* :mod:`.chunks` - kho-v1 chunk lists.
* :mod:`.radix` - kho-v2+ radix trees.
* :mod:`.vmalloc` - kho_vmalloc descriptors.
* :mod:`.handover` - root FDT -> generation, map, sub-nodes.
"""

from .handover import (decode_handover, find_preserved_copy,  # noqa: F401
                       identify, read_fdt_at)
from .model import Handover, MapPage, PreservedMap  # noqa: F401
