"""``GET /api/v1/me`` (who a token is, for the dashboard) and the dashboard's static files beside the API."""

from __future__ import annotations

from .test_api import Api, api  # noqa: F401  (the fixture)


def test_me_names_the_token_and_its_role(api: Api) -> None:  # noqa: F811
    for role in ("viewer", "operator", "admin"):
        response = api.get("/me", role=role)
        assert response.status_code == 200
        assert response.json() == {"name": f"test-{role}", "role": role}


def test_me_without_a_token_or_with_a_bad_one_is_401(api: Api) -> None:  # noqa: F811
    assert api.client.get("/api/v1/me").status_code == 401
    bad = api.client.get("/api/v1/me", headers={"Authorization": "Bearer ap_nope"})
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "invalid or revoked token"


def test_the_dashboard_is_served_at_the_root_without_a_token_and_the_api_still_wins(api: Api) -> None:  # noqa: F811
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    script = api.client.get("/pages/runs.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert api.client.get("/api/v1/instances").status_code == 401  # an API path is never a static file
    assert api.client.get("/api/v1/no-such-route").status_code == 404
    assert api.client.get("/no-such-file.js").status_code == 404
