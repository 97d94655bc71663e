"""Cross-checks between views (a layer above them: may import the decoder
and the walker; the views never import this package).

* :mod:`.blocks` - set differences of (phys, order) blocks between runs.
* :mod:`.tracker_map` - the drgn walker's tracker vs the reference decoder's
  map of the outgoing FDT.
"""

from .blocks import Difference, diff_runs  # noqa: F401
from .tracker_map import VIEWS, compare_views  # noqa: F401
