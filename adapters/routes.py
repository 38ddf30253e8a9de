"""The routing table. A new provider is one module with `routes(secrets)` and one entry
in `PROVIDERS`."""

from adapters import amb, hpgames, naga, scorpio
from adapters.contract import Route
from adapters.settings import ProviderSecrets

PROVIDERS = (scorpio, hpgames, naga, amb)


def routes(secrets: ProviderSecrets) -> list[Route]:
    table = [route for provider in PROVIDERS for route in provider.routes(secrets)]
    paths = [route.path for route in table]
    assert len(set(paths)) == len(paths), "every route has one handler"
    return table
