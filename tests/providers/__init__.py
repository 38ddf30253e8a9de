"""Every provider's requests and answers, for table-driven tests (no I/O here).

- `Keys`: the dev secrets (`refundctl.config.DEV_SECRETS`) and the session's Naga
  private key; `Keys.wrong()` gives a set where every secret is wrong.
- `Api`: one provider route. `api.request(cancel, keys, now_ms)` is a valid signed
  request (`Wire`: path, body bytes, lower-case headers) for a `Cancel`;
  `api.answers(status, body)` checks that an answer is in the provider's format and
  reads it as `Answer`s (HTTP status, the provider's code as text, reported balance).
- `bad_inputs(api)`: the bad-input matrix of a route, each case with the refusal it
  must get (`api.refusals[case.refusal]`).

Requests are written and signed here with hmac/hashlib/cryptography, not with the
adapters' own code, so a test compares the adapter against an independent reading of
the protocol. Number literals (`Lit`) are written exactly as given.

Laid out as `adapters/` is: `wire` (JSON written exactly, `Wire`, `Answer`, field
paths), `secrets` (`Keys`, the ingress's secrets), `contract` (`Cancel`, `Api`,
`Anatomy`, `stamped`), one module per provider (`scorpio`, `hpgames`, `naga`, `amb`),
`routes` (`APIS`), then `bad_input` (the matrix) and `fuzz` (hypothesis). Every public
name is importable from `tests.providers` itself.
"""

from tests.providers.amb import (
    AMB,
    AMB_CODES,
    AMB_FAIL_FIELDS,
    AMB_SUCCESS_FIELDS,
    amb_answers,
    amb_authorization,
    amb_fields,
    amb_seal,
    amb_tips,
)
from tests.providers.bad_input import (
    AMOUNTS,
    CONTROL_CHARACTERS,
    BadInput,
    Tolerated,
    assert_refused,
    bad_inputs,
    edit,
    get,
    tolerated_inputs,
)
from tests.providers.contract import Anatomy, Api, Cancel, Seal, stamped
from tests.providers.credentials import Keys, naga_private_key, provider_secrets, secrets_env
from tests.providers.fuzz import Edits, edited_wire, edits, field_names, fuzz_wire, json_values
from tests.providers.hpgames import (
    HPGAMES,
    HPGAMES_BULK,
    HPGAMES_BULK_KEY,
    HPGAMES_FIELDS,
    hpgames_answers,
    hpgames_bulk_answers,
    hpgames_bulk_fields,
    hpgames_fields,
    hpgames_seal,
)
from tests.providers.naga import NAGA, naga_answers, naga_fields, naga_seal
from tests.providers.routes import APIS, PROVIDER_APIS
from tests.providers.scorpio import (
    SCORPIO,
    SCORPIO_CODES,
    scorpio_answers,
    scorpio_fields,
    scorpio_seal,
)
from tests.providers.wire import (
    JSON_TYPE,
    LONE_SURROGATE,
    NON_ASCII_HEADER,
    NON_UTF8,
    SIGN,
    SKEW_MS,
    Answer,
    FieldPath,
    Lit,
    Refusal,
    Wire,
    path,
    paths,
    to_json,
)

__all__ = [
    "AMB",
    "AMB_CODES",
    "AMB_FAIL_FIELDS",
    "AMB_SUCCESS_FIELDS",
    "AMOUNTS",
    "APIS",
    "CONTROL_CHARACTERS",
    "HPGAMES",
    "HPGAMES_BULK",
    "HPGAMES_BULK_KEY",
    "HPGAMES_FIELDS",
    "JSON_TYPE",
    "LONE_SURROGATE",
    "NAGA",
    "NON_ASCII_HEADER",
    "NON_UTF8",
    "PROVIDER_APIS",
    "SCORPIO",
    "SCORPIO_CODES",
    "SIGN",
    "SKEW_MS",
    "Anatomy",
    "Answer",
    "Api",
    "BadInput",
    "Cancel",
    "Edits",
    "FieldPath",
    "Keys",
    "Lit",
    "Refusal",
    "Seal",
    "Tolerated",
    "Wire",
    "amb_answers",
    "amb_authorization",
    "amb_fields",
    "amb_seal",
    "amb_tips",
    "assert_refused",
    "bad_inputs",
    "edit",
    "edited_wire",
    "edits",
    "field_names",
    "fuzz_wire",
    "get",
    "hpgames_answers",
    "hpgames_bulk_answers",
    "hpgames_bulk_fields",
    "hpgames_fields",
    "hpgames_seal",
    "json_values",
    "naga_answers",
    "naga_fields",
    "naga_private_key",
    "naga_seal",
    "path",
    "paths",
    "provider_secrets",
    "scorpio_answers",
    "scorpio_fields",
    "scorpio_seal",
    "secrets_env",
    "stamped",
    "to_json",
    "tolerated_inputs",
]
