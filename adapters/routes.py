"""The routing table. A new provider is one module (its cancels, answers, routes and
`Secret`s, as `ADAPTER`), one entry in `PROVIDERS` and its member of `schemas.Provider`."""

from adapters import amb, hpgames, naga, scorpio
from adapters.contract import ProviderAdapter, Route
from adapters.credentials import ProviderSecrets, Secret

PROVIDERS: tuple[ProviderAdapter, ...] = (
    scorpio.ADAPTER,
    hpgames.ADAPTER,
    naga.ADAPTER,
    amb.ADAPTER,
)

# Every provider's credentials, in table order: what the configuration reads.
SECRETS: tuple[Secret, ...] = tuple(secret for adapter in PROVIDERS for secret in adapter.secrets)
assert len({secret.variable for secret in SECRETS}) == len(SECRETS), "one owner per variable"


def routes(secrets: ProviderSecrets) -> list[Route]:
    table = [route for adapter in PROVIDERS for route in adapter.routes(secrets)]
    providers = {adapter.provider for adapter in PROVIDERS}
    assert len(providers) == len(PROVIDERS), "one module per provider"
    assert {route.provider for route in table} == providers, "every route is its module's"
    paths = [route.path for route in table]
    assert len(set(paths)) == len(paths), "every route has one handler"
    return table
