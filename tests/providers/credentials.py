"""The providers' credentials in tests: the dev secrets (`refundctl.config.DEV_SECRETS`),
the session's Naga key pair, and a set where every secret is wrong (`Keys.wrong()`)."""

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.credentials import ProviderSecrets
from refundctl import config


def naga_private_key(naga_key_dir: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (naga_key_dir / "naga-dev-private.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def secrets_env(naga_key_dir: Path) -> dict[str, str]:
    """The provider secrets as the ingress reads them from its environment."""
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(naga_key_dir / "naga-dev-public.pem"),
    }


def provider_secrets(naga_public_key_pem: bytes = b"", **values: str) -> ProviderSecrets:
    """Secrets to build routes with in a test: the dev values, with `values` (by variable
    name) instead, and Naga's public key."""
    return ProviderSecrets(
        values={**config.DEV_SECRETS, **values},
        files={"NAGA_PUBLIC_KEY_FILE": naga_public_key_pem},
    )


@functools.cache
def _other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Keys:
    scorpio_token: str
    hpgames_merchant_id: str
    hpgames_secret: str
    naga_key: rsa.RSAPrivateKey = field(repr=False)
    amb_username: str
    amb_api_key: str

    @classmethod
    def dev(cls, naga_key_dir: Path) -> "Keys":
        dev = config.DEV_SECRETS
        return cls(
            scorpio_token=dev["SCORPIO_API_TOKEN"],
            hpgames_merchant_id=dev["HPGAMES_MERCHANT_ID"],
            hpgames_secret=dev["HPGAMES_SECRET_KEY"],
            naga_key=naga_private_key(naga_key_dir),
            amb_username=dev["AMB_AGENT_USERNAME"],
            amb_api_key=dev["AMB_API_KEY"],
        )

    def wrong(self) -> "Keys":
        """Every secret wrong (ids such as the merchant id and the agent kept)."""
        return replace(
            self,
            scorpio_token="wrong-scorpio-token",
            hpgames_secret="wrong-hpgames-secret",
            naga_key=_other_rsa_key(),
            amb_api_key="wrong-amb-api-key",
        )
