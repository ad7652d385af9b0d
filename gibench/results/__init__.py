"""Results and statistics: the long results table and its one aggregation (:mod:`gibench.results.tables`,
re-exported here so that ``from gibench.results import collect_results`` reads as before), the intervals, ranks and
agreement statistics (:mod:`gibench.results.stats`), and the collapse verdict of each row against erm's accuracy
(:mod:`gibench.results.collapse`)."""

from gibench.results.tables import *  # noqa: F401,F403  (see gibench.results.tables.__all__)
from gibench.results.tables import __all__  # noqa: F401
