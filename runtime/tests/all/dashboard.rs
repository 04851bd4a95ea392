//! The dashboard (docs/dashboard.md) in a real browser: Debian's chromium,
//! headless, driven over WebDriver (its chromedriver, started on a free
//! loopback port and stopped by PID) by fantoccini, against a real `wrun
//! serve` running a real job. Screenshots of each page go to
//! `target/dashboard/`.

use crate::common::*;
use crate::serve::Serve;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A headless chromium behind chromedriver.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
}

/// chromedriver's browser log (`goog:loggingPrefs`), as a WebDriver
/// command fantoccini does not have.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}): run scripts/setup, which installs Debian's chromium and chromium-driver")
            });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1000"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            // confirm() dialogs are answered by the test, one by one.
            "unhandledPromptBehavior": "ignore",
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let mut b =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            b.capabilities(caps.clone());
            match rt.block_on(b.connect(&format!("http://127.0.0.1:{port}"))) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver did not answer: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        Browser {
            rt,
            client: Some(client),
            driver,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, Vec::new()))
            .unwrap()
    }

    /// Waits until `script` returns something truthy; returns it.
    fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 30 s; the page shows:\n{}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let e = self.c().wait().for_element(Locator::Css(css)).await?;
                e.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.send_keys(text).await
            })
            .unwrap();
    }

    /// Presses one key (a WebDriver key code, e.g. Tab `\u{E004}`, Enter
    /// `\u{E007}`) as a person at the keyboard: it goes to whatever has
    /// the focus.
    fn press(&self, key: char) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.rt
            .block_on(self.c().perform_actions(keys))
            .unwrap_or_else(|e| panic!("press {key:?}: {e}"));
    }

    fn accept_confirm(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.rt.block_on(self.c().accept_alert()).is_err() {
            assert!(Instant::now() < deadline, "no confirm dialog came");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let dir = shots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The browser's console and network errors so far.
    fn severe_log(&self) -> Vec<String> {
        let log = self.rt.block_on(self.c().issue_cmd(BrowserLog)).unwrap();
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard")
}

/// A paced job with a source whose name is HTML.
const XSS: &str = "<img src=x onerror=window.__xss=1>";

fn job() -> String {
    format!(
        r#"version = 1
name = "dash"
parallelism = 2
[checkpoint]
interval-ms = 500

[[source]]
name = "{XSS}"
kind = "generator"
count = 1000000000
keys = 50
rate = 2000.0
events-per-second = 2000
watermark = {{ out-of-orderness-ms = 100 }}
parallelism = 2

[[operator]]
name = "count"
uid = "counter"
component = "{component}"

[[sink]]
name = "out"
kind = "discard"

[[edge]]
from = "{XSS}"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "out"
partition = "rebalance"
"#,
        component = guest("wordcount-counter"),
    )
}

#[test]
fn the_dashboard_shows_a_running_job_and_steers_it_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    std::fs::write(dir.path().join("job.toml"), job()).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", serve.d()]);
    let base = serve.url().trim_end_matches('/').to_string();
    let token = std::fs::read_to_string(Path::new(serve.d()).join("api-token")).unwrap();
    let b = Browser::start();

    // No cookie: the login page, and no data.
    b.goto(&format!("{base}/ui/"));
    b.wait_js("the login page", "return document.getElementById('login')");
    assert_eq!(b.js("return document.getElementById('jobs')"), Value::Null);
    let status = b.js(&format!(
        "return fetch('{base}/v1/jobs').then(r => r.status)"
    ));
    assert_eq!(
        status,
        json!(401),
        "the API refuses a browser without the cookie"
    );
    // That refusal is the only error the browser logged.
    let errors = b.severe_log();
    assert!(
        errors.len() == 1 && errors[0].contains("/v1/jobs") && errors[0].contains("401"),
        "{errors:#?}"
    );
    b.screenshot("login");
    // A wrong token: the login page again, saying so.
    b.type_into("#token", "not-the-token");
    b.click("#login button");
    b.wait_js(
        "the wrong token refused",
        "return document.getElementById('message').textContent.includes('Wrong token')",
    );
    // The right one: the jobs page lists the job.
    b.type_into("#token", token.trim());
    b.click("#login button");
    b.wait_js(
        "the job listed running",
        "const r = document.querySelector('tr[data-job=\"dash\"]'); return r && r.innerText.includes('running')",
    );
    let cookie = b.js("return document.cookie");
    assert_eq!(
        cookie,
        json!(""),
        "the token's cookie is HttpOnly: no script reads it"
    );
    b.screenshot("jobs");

    // The job's page: every vertex, with counts that move.
    b.click("tr[data-job=\"dash\"] a");
    b.wait_js(
        "three vertices drawn",
        "return document.querySelectorAll('svg.graph g.vertex').length === 3",
    );
    let counts = "return [...document.querySelectorAll('svg.graph g.vertex text.rates')].map(t => t.getAttribute('data-counts')).join('|')";
    let first = b.wait_js("counts shown", counts);
    b.wait_js(
        "counts moving",
        &format!(
            "const now = [...document.querySelectorAll('svg.graph g.vertex text.rates')].map(t => t.getAttribute('data-counts')).join('|'); return now !== {first} && now",
        ),
    );
    let names = b.js(
        "return [...document.querySelectorAll('svg.graph g.vertex')].map(g => g.getAttribute('data-vertex'))",
    );
    assert_eq!(names, json!([XSS, "count", "out"]), "names shown as text");
    assert_eq!(
        b.js("return document.querySelectorAll('img').length"),
        json!(0),
        "nothing a job names becomes an element"
    );
    assert_eq!(b.js("return window.__xss === undefined"), json!(true));
    // Rates and busy shares arrive with the next samples.
    b.wait_js(
        "rates shown",
        "return [...document.querySelectorAll('svg.graph g.vertex')].some(g => g.textContent.includes('/s in'))",
    );
    // A vertex's panel: subtasks, module, charts.
    // The source's panel: a watermark per split.
    b.js("document.querySelector('svg.graph g.vertex').dispatchEvent(new MouseEvent('click'))");
    b.wait_js(
        "the source's split watermarks",
        "const p = document.getElementById('vertex'); return p.innerText.includes('Watermark per split') && p.innerText.includes(' UTC')",
    );
    b.click("svg.graph g.vertex[data-vertex=\"count\"]");
    b.wait_js(
        "the operator's panel",
        "const p = document.getElementById('vertex'); return p.innerText.includes('blake3:') && p.innerText.includes('Subtasks') && p.innerText.includes('Watermarks')",
    );
    // On a laptop-sized window the graph and the panel sit side by side,
    // the graph the wider.
    assert_eq!(
        b.js("const g = document.getElementById('graph').getBoundingClientRect(), p = document.getElementById('vertex').getBoundingClientRect(); return g.right <= p.left && Math.abs(g.top - p.top) < 2 && g.width > 2 * p.width"),
        json!(true),
        "the graph and its panel side by side"
    );
    b.screenshot("job");

    // The modules page: the counter's module, with the state format the
    // running operator declared.
    b.goto(&format!("{base}/ui/#/modules"));
    b.wait_js(
        "the module with its state format",
        "const t = document.getElementById('modules').innerText; return t.includes('wrun:operator@') && t.includes('wordcount v1')",
    );
    b.screenshot("modules");
    b.goto(&format!("{base}/ui/#/jobs/dash"));
    b.wait_js(
        "the job's graph again",
        "return document.querySelectorAll('svg.graph g.vertex').length === 3",
    );

    // A savepoint from the page: `wrun savepoint list` has it.
    b.click("#main .actions button.primary");
    let said = b.wait_js(
        "the savepoint taken",
        "const t = document.getElementById('action-progress').textContent; return t.includes(' taken at checkpoint') && t",
    );
    let id = said
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let list = ok(dir.path(), &["savepoint", "list", "--data-dir", serve.d()]);
    assert!(list.contains(&id), "{id} in:\n{list}");
    b.wait_js(
        "the savepoint in the job's list",
        &format!("return !!document.querySelector('#savepoints tr[data-savepoint=\"{id}\"]')"),
    );

    // Rescale from the page, by keyboard: the new parallelism typed, Tab
    // to the Rescale button, Enter. The job stops at a savepoint and runs
    // again from it with three counting subtasks.
    b.type_into("#rescale-parallelism", "3");
    b.press('\u{E004}');
    assert_eq!(
        b.js("return document.activeElement.textContent"),
        json!("Rescale")
    );
    b.press('\u{E007}');
    b.accept_confirm();
    b.wait_js(
        "rescaled",
        "return document.getElementById('action-progress').textContent.includes('running again from it at parallelism 3')",
    );
    let graph = serve.client().get("/v1/jobs/dash/graph").unwrap();
    assert_eq!(graph["vertices"][1]["parallelism"], 3, "{graph}");
    // Its vertex chosen by keyboard: three subtasks in the panel.
    b.wait_js(
        "the new graph drawn",
        "return document.querySelectorAll('svg.graph g.vertex').length === 3",
    );
    b.js("document.querySelector('svg.graph g.vertex[data-vertex=\"count\"]').focus()");
    b.press('\u{E007}');
    b.wait_js(
        "three subtasks after the rescale",
        "return document.querySelectorAll('#vertex tr[data-subtask]').length === 3",
    );
    b.screenshot("job-rescaled");

    // Stop with a savepoint from the page: the job stops.
    b.js("[...document.querySelectorAll('#main .actions button')].find(b => b.textContent === 'Stop with a savepoint').click()");
    b.accept_confirm();
    b.wait_js(
        "stopped at a savepoint",
        "return document.getElementById('action-progress').textContent.includes('stopped at savepoint')",
    );
    let s = serve.client().get("/v1/jobs/dash").unwrap();
    assert_eq!(s["state"], "stopped", "{s}");
    b.wait_js(
        "the page shows it stopped",
        "return document.getElementById('job-state').textContent === 'stopped'",
    );
    b.screenshot("job-stopped");

    // The other pages.
    b.goto(&format!("{base}/ui/#/savepoints"));
    b.wait_js(
        "savepoints listed",
        "return document.querySelectorAll('#savepoints tr[data-savepoint]').length >= 2",
    );
    b.screenshot("savepoints");

    let errors = b.severe_log();
    assert!(errors.is_empty(), "the browser console: {errors:#?}");
}

/// The cookie alone cannot change anything: a request that would needs the
/// dashboard's header (which a cross-site form cannot send).
#[test]
fn a_cookie_without_the_dashboards_header_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let base = serve.url().trim_end_matches('/').to_string();
    let token = std::fs::read_to_string(Path::new(serve.d()).join("api-token")).unwrap();
    let token = token.trim();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build(),
    );
    let cookie = format!("wrun-token={token}");
    // Reading with the cookie works.
    let r = agent
        .get(format!("{base}/v1/jobs"))
        .header("cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Changing without the header is refused, 403, naming the header.
    let mut r = agent
        .post(format!("{base}/v1/jobs/any/cancel"))
        .header("cookie", &cookie)
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.body_mut().read_to_string().unwrap();
    assert!(body.contains("x-wrun-ui"), "{body}");
    // With it, the request reaches the route (no such job: 404).
    let r = agent
        .post(format!("{base}/v1/jobs/any/cancel"))
        .header("cookie", &cookie)
        .header("x-wrun-ui", "1")
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 404);
    // A wrong cookie is no login.
    let r = agent
        .get(format!("{base}/v1/jobs"))
        .header("cookie", "wrun-token=nope")
        .call()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The login sets an HttpOnly, SameSite=Strict cookie; a wrong token
    // gets the login page again.
    let r = agent
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!("token={token}"))
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let mut r = agent
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send("token=nope")
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("Wrong token")
    );
    // The event stream: refusals are plain errors; an answer is a stream
    // whose first event comes at once.
    for (q, status) in [("?job=nope", 404), ("?bogus=1", 400), ("?job=..", 400)] {
        let r = agent
            .get(format!("{base}/v1/events{q}"))
            .header("cookie", &cookie)
            .call()
            .unwrap();
        assert_eq!(r.status(), status, "{q}");
    }
    let r = agent.get(format!("{base}/v1/events")).call().unwrap();
    assert_eq!(r.status(), 401);
    let mut r = agent
        .get(format!("{base}/v1/events"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(
        r.headers().get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut r.body_mut().as_reader(), &mut first).unwrap();
    let text = String::from_utf8_lossy(&first[..n]);
    assert!(
        text.starts_with("event: jobs\ndata: {\"jobs\":[]"),
        "{text}"
    );
    drop(r);
    // Pages carry a policy that runs no inline script.
    let r = agent.get(format!("{base}/ui/login")).call().unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

/// The figures that show where a job is slow point at the slow operator:
/// a generator as fast as it can go into an operator that recurses deeply
/// per event. The generator's output is full and it waits on it
/// (backpressured); the operator's input queue is full and it is busy;
/// the sink, fed by the slow one, waits for input (idle).
#[test]
fn backpressure_shows_where_the_job_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"version = 1
name = "slow"
[[source]]
name = "gen"
kind = "generator"
count = 1000000000
keys = 50

[[operator]]
name = "slow"
component = "{chaos}"
config = {{ mode = "recurse", n = 2000 }}

[[sink]]
name = "out"
kind = "discard"

[[edge]]
from = "gen"
to = "slow"

[[edge]]
from = "slow"
to = "out"
"#,
        chaos = guest("chaos"),
    );
    let control = wrun::exec::JobControl::new("slow");
    let opts = wrun::exec::RunOptions {
        control: Some(control.clone()),
        ..Default::default()
    };
    let (d, t) = (dir.path().to_path_buf(), toml.clone());
    let job = std::thread::spawn(move || run_with(&d, &t, None, &opts));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut before, mut at) = (None, Instant::now());
    loop {
        assert!(Instant::now() < deadline, "no metrics within a minute");
        if job.is_finished() {
            panic!("the job ended: {:?}", job.join().unwrap().map(|_| ()));
        }
        if let Some(m) = control.metrics() {
            let now: Vec<_> = m.vertices.iter().map(|v| v.loads()[0]).collect();
            if let Some(b) = &before {
                let b: &Vec<wrun::exec::load::LoadTotals> = b;
                let window = at.elapsed();
                let share = |i: usize| now[i].shares_since(&b[i], window);
                let (gen_, slow, out) = (share(0), share(1), share(2));
                if now[0].output_fill > 0.5
                    && now[1].queue_fill() > 0.5
                    && gen_.backpressured > 0.5
                    && slow.busy > 0.5
                    && out.idle > 0.5
                {
                    assert_eq!(now[2].output_fill, 0.0, "a sink sends nowhere");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "backpressure never showed: gen {gen_:?} (output {}), slow {slow:?} (input {}), out {out:?}",
                    now[0].output_fill,
                    now[1].queue_fill()
                );
            }
            before = Some(now);
            at = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    control.cancel();
    assert!(job.join().unwrap().is_err(), "cancelled");
}

/// A 50-vertex job (two sources, three layers of fifteen operators, three
/// sinks) stays readable: every vertex drawn, no two overlapping, every
/// name inside its box; at full size the frame scrolls and *Fit to the
/// frame* shows all of it inside the frame; the page keeps its layout on a
/// laptop screen, a large monitor and a narrow window.
#[test]
fn a_50_vertex_graph_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let counter = guest("wordcount-counter");
    let mut m = String::from("version = 1\nname = \"wide\"\n");
    for s in 0..2 {
        m += &format!(
            "[[source]]\nname = \"source-{s}\"\nkind = \"generator\"\ncount = 1000000000\nkeys = 10\nrate = 50.0\n"
        );
    }
    for layer in ["a", "b", "c"] {
        for i in 0..15 {
            m += &format!(
                "[[operator]]\nname = \"{layer}-operator-{i}\"\nuid = \"{layer}{i}\"\ncomponent = \"{counter}\"\n"
            );
        }
    }
    for k in 0..3 {
        m += &format!("[[sink]]\nname = \"sink-{k}\"\nkind = \"discard\"\n");
    }
    for i in 0..15 {
        m += &format!(
            "[[edge]]\nfrom = \"source-{}\"\nto = \"a-operator-{i}\"\npartition = \"hash\"\n",
            i % 2
        );
        m += &format!("[[edge]]\nfrom = \"a-operator-{i}\"\nto = \"b-operator-{i}\"\n");
        m += &format!("[[edge]]\nfrom = \"b-operator-{i}\"\nto = \"c-operator-{i}\"\n");
        m += &format!(
            "[[edge]]\nfrom = \"c-operator-{i}\"\nto = \"sink-{}\"\n",
            i % 3
        );
    }
    std::fs::write(dir.path().join("job.toml"), m).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", serve.d()]);
    let base = serve.url().trim_end_matches('/').to_string();
    let token = std::fs::read_to_string(Path::new(serve.d()).join("api-token")).unwrap();
    let b = Browser::start();
    b.goto(&format!("{base}/ui/login"));
    b.type_into("#token", token.trim());
    b.click("#login button");
    b.wait_js(
        "signed in",
        "return !!document.querySelector('tr[data-job=\"wide\"]')",
    );
    b.goto(&format!("{base}/ui/#/jobs/wide"));
    b.wait_js(
        "fifty vertices drawn",
        "return document.querySelectorAll('svg.graph g.vertex').length === 50",
    );
    // No two boxes overlap, and each name fits in its box.
    let problems = b.js(
        "const boxes = [...document.querySelectorAll('svg.graph g.vertex')].map(g => [g.getAttribute('data-vertex'), g.querySelector('rect.box').getBoundingClientRect(), g.querySelector('text.name').getBoundingClientRect()]);
         const out = [];
         boxes.forEach(([n, r, t], i) => {
           if (t.left < r.left || t.right > r.right) out.push(n + ': name outside its box');
           boxes.slice(i + 1).forEach(([m, s]) => {
             if (r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom) out.push(n + ' overlaps ' + m);
           });
         });
         return out;",
    );
    assert_eq!(problems, json!([]), "the layout");
    // At full size the frame scrolls; fitted, the whole graph is inside it.
    let fits = "const w = document.getElementById('graph'), s = w.querySelector('svg').getBoundingClientRect(), f = w.getBoundingClientRect(); return s.width <= f.width + 1 && s.height <= f.height + 1";
    assert_eq!(
        b.js(fits),
        json!(false),
        "at full size the graph is larger than its frame"
    );
    b.click("#fit-graph");
    assert_eq!(b.js(fits), json!(true), "fitted to the frame");
    b.wait_js(
        "rates on every vertex",
        "return [...document.querySelectorAll('svg.graph g.vertex text.rates')].every(t => t.textContent.includes('/s'))",
    );
    b.screenshot("job-50-vertices-fitted");
    b.click("#fit-graph");
    assert_eq!(b.js(fits), json!(false), "back at full size");
    b.screenshot("job-50-vertices");
    // On a laptop screen and a large monitor the graph and its panel sit
    // side by side; on a narrow window the panel moves under the graph;
    // the page never scrolls sideways.
    for (w, h, beside) in [(1366, 768, true), (2560, 1440, true), (1000, 800, false)] {
        b.rt.block_on(b.c().set_window_size(w, h)).unwrap();
        let seen = b.wait_js(
            "the layout at the new size",
            "const g = document.getElementById('graph').getBoundingClientRect(), p = document.getElementById('vertex').getBoundingClientRect(); return window.innerWidth > 0 && {sideways: document.documentElement.scrollWidth > window.innerWidth, beside: g.right <= p.left && Math.abs(g.top - p.top) < 2, below: p.top >= g.bottom}",
        );
        assert_eq!(seen["sideways"], false, "{w}x{h}: {seen}");
        let at = if beside { "beside" } else { "below" };
        assert_eq!(seen[at], true, "{w}x{h}: the panel {at} the graph: {seen}");
        b.screenshot(&format!("job-50-vertices-{w}x{h}"));
    }
    let errors = b.severe_log();
    assert!(errors.is_empty(), "the browser console: {errors:#?}");
}
