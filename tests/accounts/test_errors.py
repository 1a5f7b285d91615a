"""Bad input anywhere gets a 4xx in the one error shape, never a 500."""

from __future__ import annotations

import re

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.accounts.test_authorization import routes
from tests.conftest import LiveServer


def test_bad_bodies_on_every_write_route(live: LiveServer) -> None:
    admin = make_user(live, role="admin")
    _, key = make_key(live, admin)
    headers = {**bearer(key), "Content-Type": "application/json"}
    with live.client() as http:
        paths = live.app.openapi()["paths"]
        with_body = [
            (method, path)
            for method, path in routes(live)
            if "requestBody" in paths[path][method.lower()]
        ]
        assert len(with_body) >= 8
        for method, path in with_body:
            url = re.sub(r"{\w+}", str(admin.id), path)
            for body in (b"{not json", b'{"a": ', b"[1, 2", "\u00ff\u00fe".encode("latin-1")):
                response = http.request(method, url, content=body, headers=headers)
                assert 400 <= response.status_code < 500, (method, path, body, response.text)
                assert_error_shape(response.json(), response.status_code)
            for body in (
                b'{"unexpected_field": 1}',
                b'{"name": 12, "password": [], "code": {}}',
                b"[]",
                b'"x"',
            ):
                response = http.request(method, url, content=body, headers=headers)
                assert 400 <= response.status_code < 500, (method, path, body, response.text)
                assert_error_shape(response.json(), response.status_code)


def test_malformed_json_wrong_types_unknown_fields(live: LiveServer) -> None:
    person = make_user(live)
    _, key = make_key(live, person)
    headers = {**bearer(key), "Content-Type": "application/json"}
    with live.client() as http:
        malformed = http.post("/api/v1/keys", content=b"{nope", headers=headers)
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_json"
        wrong_type = http.post(
            "/api/v1/keys", json={"name": "k", "rate_limit_per_minute": "many"}, headers=bearer(key)
        )
        assert wrong_type.status_code == 422
        assert (
            wrong_type.json()["error"]["details"]["errors"][0]["field"]
            == "body.rate_limit_per_minute"
        )
        unknown = http.post(
            "/api/v1/keys", json={"name": "k", "colour": "red"}, headers=bearer(key)
        )
        assert unknown.status_code == 422 and "colour" in unknown.text
        assert_error_shape(unknown.json(), 422)


def test_oversized_bodies_get_413(live: LiveServer) -> None:
    person = make_user(live)
    _, key = make_key(live, person)
    big = b'{"name": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    with live.client() as http:
        response = http.post(
            "/api/v1/keys", content=big, headers={**bearer(key), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert_error_shape(response.json(), 413)

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"x" * 65536

        streamed = http.post(
            "/api/v1/keys",
            content=chunks(),
            headers={**bearer(key), "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert_error_shape(streamed.json(), 413)


def test_unknown_routes_and_methods(live: LiveServer) -> None:
    with live.client() as http:
        missing = http.get("/api/v1/nothing-here")
        assert missing.status_code == 404
        assert_error_shape(missing.json(), 404)
        wrong = http.put("/health")
        assert wrong.status_code == 405
        assert_error_shape(wrong.json(), 405)
        bad_scheme = http.get("/api/v1/me", headers={"Authorization": "Basic abc"})
        assert bad_scheme.status_code == 401
        assert_error_shape(bad_scheme.json(), 401)


def test_health_ready_and_docs(live: LiveServer) -> None:
    with live.client() as http:
        assert http.get("/health").json()["status"] == "ok"
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert http.get("/docs").status_code == 200
        assert "/api/v1/keys" in http.get("/openapi.json").json()["paths"]
