"""Results and statistics: the long results table and its one aggregation (:mod:`gibench.results.tables`,
re-exported here so that ``from gibench.results import collect_results`` reads as before), the intervals, ranks and
agreement statistics (:mod:`gibench.results.stats`), the collapse verdict of each row against erm's accuracy
(:mod:`gibench.results.collapse`), and how far a cheap protocol keeps an expensive one's rankings
(:mod:`gibench.results.protocol_agreement`)."""

from gibench.results.tables import *  # noqa: F401,F403  (see gibench.results.tables.__all__)
from gibench.results.tables import __all__  # noqa: F401
