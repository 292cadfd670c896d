"""Every operation of the OpenAPI schema, fuzzed through the real ASGI app: no 5xx, answers as documented.

Bounded: 40 examples per operation, valid and invalid requests both. `/realtime/connect` is left out: a valid
request opens a stream that never ends by itself; its hostile inputs are in tests/realtime/test_endpoints.py and
tests/system/test_hostile_requests.py. A fault injected into the publish body's validation fails this test.
"""

import json

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from livesite.asgi import application

EXAMPLES = 40


def _schema() -> "schemathesis.BaseSchema":
    # Generated in process, as /api/schema serves it: loading it over HTTP at collection time would meet the
    # ALLOWED_HOSTS of before pytest-django's test settings.
    raw = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    # Valid and invalid requests both: an attacker sends the second kind.
    config = SchemathesisConfig.from_dict({"generation": {"mode": "all", "max-examples": EXAMPLES}})
    loaded = schemathesis.openapi.from_dict(raw, config=config).exclude(path="/realtime/connect")
    loaded.app = application
    return loaded


schema = _schema()


@pytest.fixture
def token(django_user_model) -> str:
    from rest_framework.authtoken.models import Token

    admin, _ = django_user_model.objects.get_or_create(username="fuzz-admin", is_staff=True, is_superuser=True)
    return Token.objects.get_or_create(user=admin)[0].key


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_fails_or_breaks_its_schema(case: schemathesis.Case, token: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"},
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
    )
