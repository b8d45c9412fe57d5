"""Every page the project writes or serves, as headless Chromium renders it (tests/browser.py):
the study report (``report.html``), the interactive Pareto page (``pareto.html``) and
optuna-dashboard on a study's storage. The MLflow UI has its own module
(tests/test_mlflow_ui.py).

Assertions read what a person sees: the DOM after the page's JavaScript ran, the layout
and decoding the browser did, and the screenshot's pixels; the two files the project
writes are also rendered cut off from the network, and the browser's own record of every
request they made must hold nothing but the file itself and inline data. The studies are
built without training (the trials' scores as user attributes, as the sweep writes them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from browser import (
    WINDOW,
    colour_fraction,
    distinct_colours,
    ink_fraction,
    open_page,
    parse_dom,
    screenshot,
)
from engines import REPO, free_port
from studies import BAD_ROPE, attrs, complete, study, tiny_trials

from search.presets import enqueue_presets
from search.signature import record_config
from search.study_view import study_view
from space.schema import load_config
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
)
from tracking.pareto import pareto_of_study
from tracking.pareto_plots import write_pareto_files
from tracking.report import build_report

CANDIDATES = ("rope", "qknorm", "nope", "rnope_swa")  # tests/studies.py tiny_trials
REPORT_HEADINGS = (
    "What the sweep found",
    "What the variants are",
    "Findings: the hypotheses on this study",
    "Per-candidate scores (mean ± std over seeds)",
    "Rank stability across seeds",
    "Signal and noise per objective",
    "Accuracy and loss vs context length",
    "Needle-in-a-haystack heatmaps (mean over seeds)",
    "Attention mass per layer kind (Begin / Needle / Context / End)",
    "Pareto front (candidate means)",
    "Runs and notes",
)
FIGURE_SECTIONS = ("curves", "niah", "mass", "pareto")
FRONT_RED = (0xD6, 0x27, 0x28)  # the front's colour on the Pareto page


def _section(dom, section_id: str) -> list:
    """The elements under heading ``section_id``, up to the next heading."""
    body = dom.find_all("body")[0].children
    start = next(i for i, n in enumerate(body) if n.tag == "h2" and n.attrs.get("id") == section_id)
    out = []
    for node in body[start + 1 :]:
        if node.tag == "h2":
            break
        out.append(node)
    return out


def _only_local(requests: list[str], allowed: tuple[str, ...]) -> list[str]:
    return [u for u in requests if not u.startswith(allowed)]


# -- the study report ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    tiny = study(tiny_trials(), f"sqlite:///{folder / 'optuna.db'}", "tiny")
    return build_report(tiny, folder / "out")


def test_report_page_renders_every_section_candidate_and_figure_offline(report, tmp_path):
    url = report["report.html"].as_uri()
    with open_page(url, tmp_path / "live", offline=True) as page:
        dom = parse_dom(page.dom())
        decoded = page.evaluate(
            "Array.from(document.images, i => ({complete: i.complete, width: i.naturalWidth,"
            " box: i.getBoundingClientRect().toJSON()}))"
        )
        height = page.evaluate("document.documentElement.scrollHeight")
        requests = list(page.requests)

    assert "tiny" in dom.find_all("h1")[0].text()
    assert [h.text() for h in dom.find_all("h2")] == list(REPORT_HEADINGS)
    found = " ".join(n.text() for n in _section(dom, "found"))
    assert "Pareto front of candidate means" in found and "rnope_swa" in found
    findings = json.loads(report["summary.json"].read_text())["findings"]
    verdicts = [f["verdict"] for f in findings]
    # nope learns nothing at T (acc@1x 0.3): the competence gate makes its claim invalid.
    assert {f["key"]: f["verdict"] for f in findings}["nope_degrades_past_T"] == "invalid"
    kinds = ("supported", "contradicted", "undecided", "invalid")
    tally = ", ".join(f"{verdicts.count(v)} {v}" for v in kinds)
    assert f"Hypotheses: {tally} of {len(verdicts)}" in found
    # The decided hypotheses are named, supported then contradicted then invalid, each in
    # its own code element, in the order the line reads.
    line = next(
        li
        for n in _section(dom, "found")
        for li in n.find_all("li")
        if li.text().startswith("Hypotheses:")
    )
    named = [f["key"] for v in kinds if v != "undecided" for f in findings if f["verdict"] == v]
    assert [c.text() for c in line.find_all("code")] == named
    assert "supported:" in line.text() and "invalid:" in line.text()
    # Every candidate has its row in the table of scores (name, then its layout below it).
    table = next(n for n in _section(dom, "table") if n.tag == "table")
    rows = table.find_all("tbody")[0].find_all("tr")
    assert sorted(r.find_all("td")[1].text().split()[0] for r in rows) == sorted(CANDIDATES)
    # Every figure is an inline PNG, in its own section.
    for section_id in FIGURE_SECTIONS:
        images = [img for n in _section(dom, section_id) for img in n.find_all("img")]
        assert len(images) == 1, section_id
        assert images[0].attrs["src"].startswith("data:image/png;base64,")
        assert images[0].attrs["alt"]
    assert len(dom.find_all("img")) == len(FIGURE_SECTIONS)

    # The browser decoded every image, and nothing but the file and inline data was asked for.
    assert len(decoded) == len(FIGURE_SECTIONS)
    assert all(d["complete"] and d["width"] > 0 for d in decoded), decoded
    assert url in requests and not _only_local(requests, (url, "data:image/png;base64,"))

    # The whole page at once: not blank, and each figure's region shows a picture.
    pixels = screenshot(url, tmp_path / "report.png", tmp_path / "shot", window=(WINDOW[0], height))
    assert ink_fraction(pixels) > 0.05
    first_screen = pixels[: WINDOW[1]]
    assert ink_fraction(first_screen) > 0.03
    for d in decoded:
        box = d["box"]
        top, left = round(box["top"]), round(box["left"])
        region = pixels[top : top + round(box["height"]), left : left + round(box["width"])]
        assert region.shape[0] > 200 and region.shape[1] > 400, box
        assert distinct_colours(region) > 100 and region.std() > 20, box
        assert ink_fraction(region) > 0.02, box


# -- the interactive Pareto page --------------------------------------------------------


@pytest.fixture(scope="module")
def pareto(tmp_path_factory):
    """The front the study run publishes (``pareto/pareto.html``), two trials on it."""
    folder = tmp_path_factory.mktemp("pareto")
    # A RoPE run with the best short-context loss joins the hybrid on the front.
    better_rope = complete(attrs("rope", 2, acc=BAD_ROPE[2], short_bpb=2.3, kv=8e6))
    tiny = study([*tiny_trials(), better_rope], f"sqlite:///{folder / 'optuna.db'}", "tiny")
    table = pareto_of_study(study_view(tiny))
    written = write_pareto_files(table, folder)
    return {"table": table, "html": written["pareto.html"]}


def test_pareto_page_plots_every_trial_and_marks_the_front_offline(pareto, tmp_path):
    table, path = pareto["table"], pareto["html"]
    url = path.as_uri()
    raw = path.read_text()
    with open_page(url, tmp_path / "live", offline=True) as page:
        rendered = page.dom()
        # Pointing at a front point shows its trial.
        point = page.evaluate(
            "(() => { const c = document.querySelector('circle.front'), b ="
            " c.getBoundingClientRect(); return {x: b.x + b.width / 2, y: b.y + b.height / 2,"
            " trial: c.dataset.trial}; })()"
        )
        page.hover(point["x"], point["y"])
        tip = page.wait_for(
            "document.getElementById('tip').style.display === 'block'"
            " && document.getElementById('tip').textContent"
        )
        plot = page.evaluate("document.getElementById('plot').getBoundingClientRect().toJSON()")
        requests = list(page.requests)
    dom = parse_dom(rendered)
    ranked = sorted(r["trial"] for r in table.rows if r["rank"] is not None)
    front = sorted(r["trial"] for r in table.front)
    assert len(front) == 2 and len(ranked) == 9

    # The script built the plot, the axis selectors and the table: none of it is in the file.
    for built in ("<circle", "data-trial=", "<option", 'class="front"'):
        assert built not in raw and built in rendered, built
    circles = dom.find_all("circle")
    assert sorted(int(c.attrs["data-trial"]) for c in circles) == ranked
    marked = dom.find_all("circle", class_="front")
    assert sorted(int(c.attrs["data-trial"]) for c in marked) == front
    assert all(c.attrs["fill"] == "#d62728" and float(c.attrs["r"]) == 7 for c in marked)
    assert all(c.attrs["fill"] != "#d62728" for c in circles if c not in marked)
    labels = {t.text() for t in dom.find_all("text", class_="label")}
    assert labels == {str(t) for t in front}  # the front's trial numbers beside their points
    for c in circles:  # each point's tooltip names it (and any trial drawn on the same spot)
        assert f"trial {c.attrs['data-trial']} " in c.find_all("title")[0].text()
    options = [o.attrs["value"] for o in dom.find_all("select", id="x")[0].find_all("option")]
    assert options == ["trial", *table.objective_names]
    rows = dom.find_all("tbody")[0].find_all("tr")
    assert sorted(int(r.attrs["data-trial"]) for r in rows) == sorted(
        r["trial"] for r in table.rows
    )
    assert sorted(int(r.attrs["data-trial"]) for r in dom.find_all("tr", class_="front")) == front
    summary = dom.find_all("p", id="summary")[0].text()
    assert summary.startswith(f"2 of {len(ranked)} ranked trials on the Pareto front")
    for row in table.front:
        assert f"trial {row['trial']} ({row['candidate']})" in summary
    assert "MiB" in dom.find_all("table", id="table")[0].text()  # KV cache in binary units

    assert tip.startswith(f"trial {point['trial']}  rank 0")
    assert requests == [url]  # the page asked for nothing but itself

    pixels = screenshot(url, tmp_path / "pareto.png", tmp_path / "shot", offline=True)
    top, left = round(plot["top"]), round(plot["left"])
    region = pixels[top : top + round(plot["height"]), left : left + round(plot["width"])]
    assert plot["top"] + plot["height"] <= WINDOW[1]  # the plot is on the first screen
    assert distinct_colours(region) > 20 and ink_fraction(region) > 0.01
    assert colour_fraction(region, FRONT_RED) > 0.0005  # the front's points are drawn red


# -- optuna-dashboard on the study's storage ----------------------------------------------

DASH_STUDY = "demo-review"
# What each demo preset scored (long_acc, short_bpb, kv_cache_bytes): no training here.
PRESET_SCORES = {
    "rope": (0.05, 2.30, 8.0e6),
    "qknorm": (0.10, 2.25, 8.0e6),
    "nope": (0.30, 2.90, 8.0e6),
    "rnope_swa": (0.95, 2.32, 2.5e6),
}


@pytest.fixture(scope="module")
def dashboard_study(tmp_path_factory):
    """The demo sweep's study in SQLite as the driver leaves it: sweep file recorded, the
    presets enqueued and run first, then two sampled candidates and one FAIL."""
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'optuna.db'}"
    path = REPO / "configs" / "demo.yaml"
    config = load_config(path)
    s = optuna.create_study(
        storage=url,
        study_name=DASH_STUDY,
        directions=config.directions(),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    record_config(s, config, path.read_text())
    enqueue_presets(s, config)
    sampled = [(0.60, 2.40, 4.0e6), (0.20, 2.60, 6.0e6)]
    for i in range(len(PRESET_SCORES) + len(sampled) + 1):
        trial = s.ask()
        knobs = config.suggest(trial)
        candidate = config.candidate(trial.user_attrs.get(ATTR_KNOBS, knobs))
        trial.set_user_attr(ATTR_CANDIDATE_ID, candidate.id)
        trial.set_user_attr(ATTR_CANDIDATE_NAME, candidate.name)
        preset = trial.user_attrs.get(ATTR_PRESET)
        if preset is not None:
            s.tell(trial, list(PRESET_SCORES[preset]))
        elif i < len(PRESET_SCORES) + len(sampled):
            s.tell(trial, list(sampled[i - len(PRESET_SCORES)]))
        else:
            trial.set_user_attr(ATTR_REASON, "diverged")
            s.tell(trial, state=optuna.trial.TrialState.FAIL)
    return {"url": url, "study": s, "objectives": config.objective_names()}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # not listening yet
        return False


@pytest.fixture(scope="module")
def dashboard(dashboard_study, tmp_path_factory):
    """``ropenope dashboard --storage URL`` (README, "Review a sweep") on 127.0.0.1: the
    read-only, Host-checking wrapper around optuna-dashboard; stopped by its PID."""
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "optuna-dashboard.log"
    command = str(Path(sys.executable).parent / "ropenope")
    url = dashboard_study["url"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [command, "dashboard", "--storage", url, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the server and its workers
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _answers(f"{base}/api/studies"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield {"base": base, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_for_text(page, texts: list[str]) -> None:
    """Until the page shows every one of ``texts`` (the dashboard fetches its data)."""
    page.wait_for(f"{json.dumps(texts)}.every(t => document.body.innerText.includes(t))", 90)


def test_optuna_dashboard_shows_the_study_objectives_and_every_trial(
    dashboard_study, dashboard, tmp_path
):
    s, base = dashboard_study["study"], dashboard["base"]
    objectives = dashboard_study["objectives"]
    trials = s.get_trials(deepcopy=False)
    study_id = s._study_id
    study_url = f"{base}/dashboard/studies/{study_id}"

    with open_page(study_url, tmp_path / "live", offline=True) as live:
        # The study page: its name, and the Pareto front plotted on the study's objective
        # names (set by ropenope; without them the page says "Objective 0", "Objective 1").
        _wait_for_text(live, [f"{DASH_STUDY} (id={study_id})", *objectives[:2]])
        page = parse_dom(live.dom()).text()
        # The trials page: the count, every trial with its state, a trial's candidate.
        live.goto(f"{study_url}/trials")
        _wait_for_text(live, [f"{len(trials)} Trials", f"Trial {trials[-1].number}"])
        listing = parse_dom(live.dom()).text()
        requests = list(live.requests)
    assert f"{DASH_STUDY} (id={study_id})" in page and "Pareto Front" in page
    assert objectives[0] in page and objectives[1] in page and "Objective 0" not in page
    assert f"{len(trials)} Trials" in listing
    for t in trials:
        assert f"Trial {t.number}" in listing
    assert listing.count("Complete") >= len(trials) - 1 and "Fail" in listing
    assert trials[0].user_attrs[ATTR_CANDIDATE_NAME] in listing
    # Served whole by the dashboard itself: no request goes anywhere else.
    assert requests and not _only_local(requests, (base + "/", "data:"))

    pixels = screenshot(study_url, tmp_path / "optuna-dashboard.png", tmp_path / "shot", 10_000,
                        offline=True)  # fmt: skip
    assert ink_fraction(pixels) > 0.05 and distinct_colours(pixels) > 200


def _request(url: str, method: str, host: str, body: bytes | None = None) -> int:
    """The HTTP status of ``method url`` sent with ``Host: host`` (what a DNS-rebinding
    page sends: the attacker's name, resolved to 127.0.0.1)."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Host": host})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _snapshot(url: str, name: str) -> list[tuple]:
    s = optuna.load_study(study_name=name, storage=url)
    return [(t.number, t.state, t.values, dict(t.user_attrs)) for t in s.get_trials()]


def test_optuna_dashboard_refuses_writes_and_foreign_hosts(dashboard_study, dashboard):
    """Issue 21: a foreign-Host DELETE of a study and POST of a forged result were
    accepted (204) by optuna-dashboard. Through the wrapper: 403 for a foreign Host, 405
    for any write from this host, and the study is unchanged; reads still answer. The
    target is a second study in the same storage with a RUNNING trial (what a forged tell
    would close), so the page test's study stays as built."""
    base, url = dashboard["base"], dashboard_study["url"]
    target = optuna.create_study(storage=url, study_name="forge-target")
    running = target.ask()
    target.enqueue_trial({})
    before = _snapshot(url, "forge-target")
    study_id, trial_id = target._study_id, running._trial_id
    port = base.rsplit(":", 1)[1]
    tell = json.dumps({"state": "Complete", "values": [1.0]}).encode()
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "localhost:1"):
        assert _request(f"{base}/api/studies/{study_id}", "DELETE", host) == 403
        assert _request(f"{base}/api/trials/{trial_id}/tell", "POST", host, tell) == 403
        assert _request(f"{base}/api/studies", "GET", host) == 403
    here = f"127.0.0.1:{port}"
    assert _request(f"{base}/api/studies/{study_id}", "DELETE", here) == 405
    assert _request(f"{base}/api/trials/{trial_id}/tell", "POST", here, tell) == 405
    assert _request(f"{base}/api/studies", "GET", here) == 200
    assert _request(f"{base}/api/studies", "HEAD", f"localhost:{port}") == 200
    assert _snapshot(url, "forge-target") == before
    assert "forge-target" in optuna.get_all_study_names(url)
