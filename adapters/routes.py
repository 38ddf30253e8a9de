"""The routing table: one row per provider endpoint. A new provider is a module + a row."""

from functools import partial

from adapters import scorpio
from adapters.contract import Route
from adapters.settings import ProviderSecrets
from schemas import Provider


def routes(secrets: ProviderSecrets) -> list[Route]:
    scorpio_config = scorpio.ScorpioConfig(api_token=secrets.scorpio_api_token.encode())
    return [
        Route(
            path="/scorpio",
            provider=Provider.SCORPIO,
            accept=partial(scorpio.accept, config=scorpio_config),
            render=scorpio.render,
            invalid=partial(scorpio.reply, scorpio.STATUS_UNKNOWN),
        ),
    ]
