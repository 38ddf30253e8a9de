"""Every provider route the tests drive, as `adapters.routes` lists them."""

from tests.providers.amb import AMB
from tests.providers.hpgames import HPGAMES, HPGAMES_BULK
from tests.providers.naga import NAGA
from tests.providers.scorpio import SCORPIO

APIS = (SCORPIO, HPGAMES, HPGAMES_BULK, NAGA, AMB)
PROVIDER_APIS = (SCORPIO, HPGAMES, NAGA, AMB)  # one route each (HPGames' single cancel)
