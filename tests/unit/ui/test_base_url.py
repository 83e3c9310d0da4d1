"""ui/base_url: the middleware adds the BACKEND_BASE_URL script to the HTML page Streamlit
serves (plain or gzip-encoded) and leaves every other response alone."""
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ui.base_url import BackendBaseUrl, with_base_url
from ui.links import PAGES

PAGE = "<html><head><script>window.prerenderReady = false</script>" + "<!-- padding -->" * 100 + "</head></html>"


def _client(gzipped: bool) -> TestClient:
    routes = [Route("/_stcore/health", lambda r: JSONResponse("ok")),
              Route("/missing", lambda r: HTMLResponse(PAGE, status_code=404)),
              Route("/{page}", lambda r: HTMLResponse(PAGE))]
    inner = [Middleware(GZipMiddleware, minimum_size=10)] if gzipped else []
    return TestClient(Starlette(routes=routes, middleware=[Middleware(BackendBaseUrl), *inner]))


def test_html_page_gets_the_script_before_its_first_script():
    for gzipped in (False, True):
        response = _client(gzipped).get("/playground", headers={"accept-encoding": "gzip" if gzipped else "identity"})
        assert response.status_code == 200 and response.headers.get("content-encoding") == ("gzip" if gzipped else None)
        assert response.text.startswith("<html><head><script>(function(){")
        assert "window.__streamlit={BACKEND_BASE_URL:" in response.text and '"playground"' in response.text
        assert response.text.endswith(PAGE.removeprefix("<html><head>"))
        if not gzipped:
            assert int(response.headers["content-length"]) == len(response.content)
    assert all(f'"{page}"' in with_base_url(PAGE.encode()).decode() for page in PAGES)


def test_everything_else_passes_through():
    client = _client(False)
    assert client.get("/_stcore/health").json() == "ok"
    assert client.get("/missing").text == PAGE  # not a page the client boots from
    assert client.post("/playground").status_code == 405
    assert with_base_url(b"no scripts") == b"no scripts"
    once = with_base_url(PAGE.encode())
    assert with_base_url(once) == once
