"""The console in a real headless browser (Debian's Chromium): a person signs in with a
ServiceAccount token, sees the endpoints of the namespaces RBAC lets them list (READY,
entities, traffic), chats with an endpoint in the playground (the answer streams from the
endpoint's gateway, called with the person's own token), and sees the request in the
endpoint's charts; a person without rights sees nothing and may call nothing.

Screenshots of the three pages go to the test's temporary directory, and to the
directory ``MODELPORT_CONSOLE_SCREENSHOTS`` names (``docs/console`` for the README)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.console.conftest import (
    HIDDEN,
    OPERATOR_METRICS_PORT,
    QUERIED,
    Namespaces,
    RunningConsole,
)
from tests.integration.gateway.fakes import FakeProvider

pytestmark = pytest.mark.cluster

ANSWER = "Hello there"
"""What the fake upstream streams, in three chunks."""


def shoot(driver: Any, name: str, tmp_path: Path) -> None:
    """A full-page screenshot, kept with the test and where MODELPORT_CONSOLE_SCREENSHOTS
    says."""
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, max(800, min(int(height) + 40, 2400)))
    targets = [tmp_path]
    if directory := os.environ.get("MODELPORT_CONSOLE_SCREENSHOTS"):
        targets.append(Path(directory))
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(target / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def sign_in(driver: Any, console: RunningConsole, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(console.url + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))


def wait(driver: Any, seconds: float = 30) -> WebDriverWait[Any]:
    return WebDriverWait(driver, seconds)


def test_a_person_sees_their_endpoints_chats_and_sees_the_traffic(
    console: RunningConsole,
    namespaces: Namespaces,
    upstream: FakeProvider,
    browser: Any,
    tmp_path: Path,
) -> None:
    mine, theirs = namespaces.mine, namespaces.theirs
    sign_in(browser, console, namespaces.tokens["alice"])

    # The list: the endpoint of alice's namespace, READY; nothing of the other namespace.
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-endpoint="{mine}/{QUERIED}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.state").text == "READY"
    assert "gpt-4o" in row.text and "100%" in row.text
    assert not browser.find_elements(By.CSS_SELECTOR, f'[data-namespace="{theirs}"]')
    assert HIDDEN not in browser.page_source
    assert "1 namespace(s) with endpoints are not shown" in browser.page_source
    assert f"system:serviceaccount:{mine}:alice" in browser.find_element(By.CLASS_NAME, "who").text
    shoot(browser, "endpoints", tmp_path)

    # The detail page: state, entities, traffic, conditions, events (and a first scrape
    # of the gateway's metrics: the charts count from here).
    browser.get(f"{console.url}/endpoints/{mine}/{QUERIED}")
    assert browser.find_element(By.ID, "state").text == "READY"
    entity = browser.find_element(By.CSS_SELECTOR, 'tr[data-entity="gpt-4o"]')
    assert "openai: gpt-4o" in entity.text and "100%" in entity.text
    assert "DEPLOYMENT_READY" in entity.text
    assert "gpt-4o 100%" in browser.find_element(By.ID, "traffic").text
    conditions = browser.find_element(By.ID, "conditions").text
    assert "Ready" in conditions and "True" in conditions
    assert "Created" in browser.find_element(By.ID, "events").text
    assert "alice" not in browser.find_element(By.CSS_SELECTOR, ".charts").text

    # The playground: the answer streams in; the entity that answered, tokens, latency.
    browser.get(f"{console.url}/playground?a={mine}/{QUERIED}")
    browser.find_element(By.NAME, "message").send_keys("Say hello")
    browser.find_element(By.ID, "send").click()
    pane = browser.find_element(By.CSS_SELECTOR, '.pane[data-pane="0"]')
    wait(browser).until(lambda _: pane.get_attribute("data-done") in ("true", "error"))
    answer = pane.find_element(By.CSS_SELECTOR, ".msg.assistant")
    assert answer.text == ANSWER, pane.text
    assert answer.get_attribute("data-entity") == "gpt-4o"
    stats = pane.find_element(By.CLASS_NAME, "stats").text
    assert "answered by gpt-4o" in stats and "11 in / 7 out" in stats and "first token" in stats
    calls = [s for s in upstream.seen if s.path == "/v1/chat/completions"]
    assert calls and calls[-1].json()["stream"] is True
    shoot(browser, "playground", tmp_path)

    # Back on the detail page, the charts have the request: alice's tokens, a latency.
    browser.get(f"{console.url}/endpoints/{mine}/{QUERIED}")
    charts = browser.find_element(By.CSS_SELECTOR, ".charts")
    tokens = charts.find_element(By.CSS_SELECTOR, 'figure[data-panel="tokens"]')
    assert f"service_principal:system:serviceaccount:{mine}:alice" in tokens.text
    assert charts.find_elements(By.CSS_SELECTOR, 'figure[data-panel="latency"] svg')
    assert charts.find_elements(By.CSS_SELECTOR, 'figure[data-panel="ttft"] svg')
    # The page's script refreshes the charts from the fragment (another interval).
    fragment = httpx.get(
        f"{console.url}/endpoints/{mine}/{QUERIED}/charts",
        cookies={c["name"]: c["value"] for c in browser.get_cookies()},
        timeout=20,
    )
    assert fragment.status_code == 200 and 'data-panel="requests"' in fragment.text
    browser.get(f"{console.url}/endpoints/{mine}/{QUERIED}")
    shoot(browser, "endpoint", tmp_path)


def test_a_person_without_rights_sees_nothing_and_may_call_nothing(
    console: RunningConsole, namespaces: Namespaces, browser: Any
) -> None:
    sign_in(browser, console, namespaces.tokens["nobody"])
    assert browser.find_element(By.ID, "no-endpoints")
    assert QUERIED not in browser.find_element(By.TAG_NAME, "main").text
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    page = httpx.get(f"{console.url}/endpoints/{namespaces.mine}/{QUERIED}", cookies=cookies)
    assert page.status_code == 403 and "may not get servingendpoints" in page.text
    chat = httpx.post(
        f"{console.url}/playground/api/{namespaces.mine}/{QUERIED}",
        cookies=cookies,
        headers={"X-Modelport-Console": "1", "Origin": console.url},
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 403
    assert "servingendpoints/invocations" in chat.json()["error"]["message"]


def test_sign_in_refuses_bad_tokens_and_forged_requests(
    console: RunningConsole, namespaces: Namespaces
) -> None:
    bad = httpx.post(f"{console.url}/login", data={"token": "a.b.c"})
    assert bad.status_code == 401 and "not valid here" in bad.text
    assert "set-cookie" not in bad.headers
    forged = httpx.post(
        f"{console.url}/login",
        data={"token": namespaces.tokens["alice"]},
        headers={"Origin": "http://evil.example"},
    )
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    anonymous = httpx.get(console.url + "/", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    good = httpx.post(f"{console.url}/login", data={"token": namespaces.tokens["alice"]})
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert namespaces.tokens["alice"] not in cookie  # an opaque id, the token stays here
    # A token passed by an authenticating proxy works without a session.
    proxied = httpx.get(
        console.url + "/", headers={"Authorization": f"Bearer {namespaces.tokens['alice']}"}
    )
    assert proxied.status_code == 200 and QUERIED in proxied.text
    assert proxied.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_operator_exports_what_the_dashboards_and_alerts_read(
    console: RunningConsole, namespaces: Namespaces
) -> None:
    text = httpx.get(f"http://127.0.0.1:{OPERATOR_METRICS_PORT}/metrics", timeout=10).text
    for ns, name in ((namespaces.mine, QUERIED), (namespaces.theirs, HIDDEN)):
        line = f'modelport_operator_endpoint_ready{{endpoint="{name}",namespace="{ns}"}} 1.0'
        assert line in text
    assert 'modelport_operator_reconciles_total{result="ok"}' in text
    assert "modelport_operator_queue_depth" in text
    assert 'modelport_operator_api_requests_total{code="201",method="POST"}' in text
    assert "process_resident_memory_bytes" in text
