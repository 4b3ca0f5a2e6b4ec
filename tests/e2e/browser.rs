//! The pages in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver), against the real application on real
//! PostgreSQL and Redis. Matches run on the stub generator (a test double,
//! `StubGenerator`) where the model would be too slow; one test runs the
//! real model. Every page is saved as a screenshot at desktop and phone
//! width under `ARENA_SCREENSHOTS` (default `.arena/screenshots`).

use crate::arena::{Arena, quick_space};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A headless Chromium with its chromedriver; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Killing chromedriver leaves its Chromium behind (a test that
        // panicked never closed its session): end every process of this
        // browser's profile.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("--user-data-dir={}", self.profile.path().display())])
            .status();
    }
}

/// Browser profiles are temporary folders named with this prefix, so a
/// crashed run's leftovers can be found (`scripts/test` ends them too).
pub const PROFILE_PREFIX: &str = "arena-chromium-";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var("ARENA_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".arena").join("screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// A fresh browser (its own profile) with a `width`×`height` window.
    pub async fn start(arena: &Arena, width: u32, height: u32) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/test installs chromium-driver)");
        let profile = tempfile::Builder::new().prefix(PROFILE_PREFIX).tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.path().display()),
                         format!("--window-size={width},{height}")]
            }
        });
        let caps: serde_json::Map<String, Value> = serde_json::from_value(caps).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::rustls().unwrap().capabilities(caps.clone()).connect(&url).await {
                Ok(client) => {
                    return Browser { client, driver, profile, base: arena.address.clone() };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start: {last:?}");
    }

    pub async fn open(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    pub async fn body(&self) -> String {
        self.text("body").await
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    /// Waits until `css` matches an element whose text contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, seconds: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while tokio::time::Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && el.text().await.is_ok_and(|t| t.contains(needle))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Saves a screenshot as `NAME.png` in the screenshot folder.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
    }

    /// Signs up through the form; the browser is then signed in.
    pub async fn sign_up(&self, username: &str, password: &str) {
        self.open("/signup").await;
        self.fill("#username", username).await;
        self.fill("#password", password).await;
        self.click("form.stack button[type=submit]").await;
    }

    pub async fn sign_in(&self, username: &str, password: &str) {
        self.open("/signin").await;
        self.fill("#username", username).await;
        self.fill("#password", password).await;
        self.click("form.stack button[type=submit]").await;
    }
}

/// A Space with matches: two players' agents in the quick Space, matches
/// settled on the stub generator.
async fn league_with_matches(arena: &Arena, settled: i64) -> crate::arena::User {
    let (designer, _players) = arena.league(2, 2, 3).await;
    arena.start(arena_server::app::Roles::ALL, None);
    arena.wait_settled(settled, 60).await;
    designer
}

#[tokio::test]
async fn a_player_signs_up_builds_an_agent_with_an_adapter_and_enters_a_space() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 2), json!({})).await;
    let b = Browser::start(&arena, 1280, 1400).await;

    // Sign-up: a short password is refused beside its field; nothing is made.
    b.sign_up("ada", "short").await;
    assert!(b.wait_text("#password-error", "10–256 characters", 5).await, "{}", b.body().await);
    let users: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&arena.db).await.unwrap();
    assert_eq!(users, 1, "only the designer exists");
    b.shot("signup-error-desktop").await;
    b.sign_up("ada", "a long passphrase").await;
    assert!(b.wait_text("h1", "Build an agent", 5).await, "after sign-up: {}", b.body().await);
    b.shot("agent-new-desktop").await;

    // The builder: a bad adapter is refused inline naming the tensor; nothing is made.
    let dir = crate::arena::random_adapter();
    let bad = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("adapter_config.json"), bad.path().join("adapter_config.json")).unwrap();
    std::fs::write(bad.path().join("adapter_model.safetensors"), b"not a safetensors file").unwrap();
    b.fill("#name", "calc").await;
    b.fill("#system_prompt", "Answer with the number only.").await;
    // The playground answers with these settings on the real model, streamed.
    b.fill("#temperature", "0").await;
    b.fill("#pg-prompt", "What is the capital of France?").await;
    b.click("#playground button").await;
    assert!(b.wait_text("#pg-status", "Done", 60).await, "playground: {}", b.text("#pg-status").await);
    let answer = b.text("#pg-out").await;
    assert!(answer.contains("Paris"), "the real model answered: {answer:?}");
    b.shot("playground-desktop").await;
    let file = |d: &std::path::Path, n: &str| d.join(n).display().to_string();
    b.fill("#adapter_config", &file(bad.path(), "adapter_config.json")).await;
    b.fill("#adapter_weights", &file(bad.path(), "adapter_model.safetensors")).await;
    b.click("#builder button[type=submit]").await;
    assert!(b.wait_text("#adapter-error", "adapter", 10).await, "{}", b.body().await);
    let agents: i64 = sqlx::query_scalar("select count(*) from agents").fetch_one(&arena.db).await.unwrap();
    assert_eq!(agents, 0);
    // The draft is kept.
    let kept = b.client.find(Locator::Css("#name")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some("calc"));
    b.fill("#adapter_config", &file(dir.path(), "adapter_config.json")).await;
    b.fill("#adapter_weights", &file(dir.path(), "adapter_model.safetensors")).await;
    b.click("#builder button[type=submit]").await;
    assert!(b.wait_text("h1", "calc", 10).await, "{}", b.body().await);
    assert!(b.path().await.starts_with("/agents/"));
    let (adapter,): (Option<String>,) =
        sqlx::query_as("select adapter_sha256 from agent_versions").fetch_one(&arena.db).await.unwrap();
    assert!(adapter.is_some(), "the version carries the uploaded adapter");

    // Enter the Space from its page.
    b.open("/spaces/quick").await;
    b.click("form[action='/spaces/quick/enter'] button").await;
    assert!(b.wait_text(".notice.good", "calc is entered", 5).await, "{}", b.body().await);
    let entered: i64 = sqlx::query_scalar("select count(*) from entries").fetch_one(&arena.db).await.unwrap();
    assert_eq!(entered, 1);
    b.shot("space-desktop").await;
}

#[tokio::test]
async fn a_match_goes_live_to_settled_and_its_page_explains_it() {
    let arena = Arena::new().await;
    let (_designer, _players) = arena.league(2, 1, 2).await;
    let b = Browser::start(&arena, 1280, 1600).await;
    b.open("/spaces/quick").await;
    assert!(b.wait_text("section.live h3", "Live", 5).await);
    // Live: the page follows the events without a reload.
    let marker: Value = b.client.execute("window.__marker = 42; return window.__marker", vec![]).await.unwrap();
    assert_eq!(marker, 42);
    arena.start(arena_server::app::Roles::ALL, None);
    let followed = b.wait_text("[data-live-log]", "settled", 30).await;
    let state: Value = b
        .client
        .execute(
            "return [document.querySelector('[data-live-events]').getAttribute('data-live-state'), typeof htmx]",
            vec![],
        )
        .await
        .unwrap();
    assert!(followed, "no live event ({state}): {}", b.body().await);
    let refreshed = b.wait_text("[data-live-target]", "settled", 10).await;
    assert!(refreshed, "not refreshed ({state}): {}", b.body().await);
    let same_page: Value = b.client.execute("return window.__marker", vec![]).await.unwrap();
    assert_eq!(same_page, 42, "updated in place, not reloaded");
    b.shot("space-live-desktop").await;
    arena.pause_all().await;

    let id: uuid::Uuid =
        sqlx::query_scalar("select id from matches where status = 'settled' order by created_at limit 1")
            .fetch_one(&arena.db)
            .await
            .unwrap();
    b.open(&format!("/matches/{id}")).await;
    let body = b.body().await;
    for needle in ["Prompt", "What is", "correct", "Rating", "Record hash", "Payout"] {
        assert!(body.contains(needle), "the match page lacks {needle:?}: {body}");
    }
    b.shot("match-desktop").await;
}

#[tokio::test]
async fn every_page_renders_at_phone_width_with_its_inputs_labelled() {
    let arena = Arena::new().await;
    league_with_matches(&arena, 6).await;
    arena.pause_all().await;
    let b = Browser::start(&arena, 360, 1400).await;
    b.sign_up("phil", "a long passphrase").await;
    assert!(b.wait_text("h1", "Build an agent", 5).await);
    let agent: uuid::Uuid =
        sqlx::query_scalar("select id from agents order by created_at limit 1").fetch_one(&arena.db).await.unwrap();
    let id: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let pages = [
        ("home", "/".to_owned()),
        ("spaces", "/spaces".to_owned()),
        ("space", "/spaces/quick".to_owned()),
        ("match", format!("/matches/{id}")),
        ("agent", format!("/agents/{agent}")),
        ("agent-new", "/agents/new".to_owned()),
        ("me", "/me".to_owned()),
        ("data", "/data".to_owned()),
    ];
    for (name, path) in pages {
        b.open(&path).await;
        // Nothing wider than the screen: the page does not scroll sideways.
        let wide: Value = b
            .client
            .execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![])
            .await
            .unwrap();
        assert_eq!(wide, false, "{path} scrolls sideways at 360 px");
        // Every visible input, select and textarea has a label.
        let unlabelled: Value = b
            .client
            .execute(
                "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
                   .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                   .map(e => e.name || e.id)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{path}: inputs without a label");
        // Every button says what it does.
        let mute: Value = b
            .client
            .execute(
                "return Array.from(document.querySelectorAll('button')).filter(e => !e.textContent.trim() && !e.getAttribute('aria-label')).length",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(mute, 0, "{path}: a button without text");
        b.shot(&format!("{name}-phone")).await;
    }
    // Signed out, the desktop views of the public pages too.
    let d = Browser::start(&arena, 1280, 1400).await;
    for (name, path) in
        [("home", "/".to_owned()), ("spaces", "/spaces".to_owned()), ("agent", format!("/agents/{agent}"))]
    {
        d.open(&path).await;
        d.shot(&format!("{name}-desktop")).await;
    }
}

#[tokio::test]
async fn the_keyboard_reaches_every_control_and_errors_leak_nothing() {
    let arena = Arena::new().await;
    arena.user("ada", "player").await;
    let b = Browser::start(&arena, 1280, 1000).await;
    b.open("/signin").await;
    // Tab from the top reaches the username, the password and the button in order.
    let mut seen = Vec::new();
    for _ in 0..12 {
        b.client.active_element().await.unwrap().send_keys("\u{E004}").await.unwrap();
        let id: Value = b
            .client
            .execute("return document.activeElement.id || document.activeElement.textContent.trim()", vec![])
            .await
            .unwrap();
        seen.push(id.as_str().unwrap_or_default().to_owned());
    }
    let at = |name: &str| seen.iter().position(|s| s == name);
    assert!(at("username") < at("password") && at("password").is_some(), "{seen:?}");
    assert!(seen.iter().any(|s| s == "Sign in"), "the submit button is reachable: {seen:?}");
    // A missing page and a missing match: the 404 page, nothing about what exists.
    b.open("/no/such/page").await;
    assert!(b.wait_text("h1", "Not found", 5).await);
    b.open(&format!("/matches/{}", uuid::Uuid::new_v4())).await;
    assert!(b.wait_text("h1", "Not found", 5).await);
    b.shot("not-found-desktop").await;
    // /me asks a stranger to sign in first, then comes back.
    b.open("/me").await;
    assert!(b.path().await.starts_with("/signin"));
    b.fill("#username", "ada").await;
    b.fill("#password", "correct horse battery").await;
    b.click("form.stack button[type=submit]").await;
    assert!(b.wait_text("h1", "ada", 5).await, "{}", b.body().await);
    assert_eq!(b.path().await, "/me");
}

/// Payloads that try to run script or break out of where text goes. Each
/// sets `window.__xss` (or opens a dialog) if it ever runs.
const XSS: &[&str] = &[
    "<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=1>",
    "<svg onload=window.__xss=1>",
    "<svg><script>window.__xss=1</script></svg>",
    "\"><script>window.__xss=1</script>",
    "'><img src=x onerror=window.__xss=1>",
    "\" onmouseover=\"window.__xss=1",
    "' onfocus='window.__xss=1' autofocus '",
    "<a href=\"javascript:window.__xss=1\">x</a>",
    "javascript:window.__xss=1",
    "<iframe src=\"javascript:window.__xss=1\"></iframe>",
    "<body onload=window.__xss=1>",
    "<math><mtext><script>window.__xss=1</script>",
    "<math href=\"javascript:window.__xss=1\">x</math>",
    "<details open ontoggle=window.__xss=1>",
    "<input autofocus onfocus=window.__xss=1>",
    "<video><source onerror=window.__xss=1>",
    "<style>@import 'http://127.0.0.9/x.css';</style>",
    "<link rel=stylesheet href=//127.0.0.9/x.css>",
    "<meta http-equiv=refresh content=\"0;url=javascript:window.__xss=1\">",
    "<object data=\"javascript:window.__xss=1\">",
    "<embed src=\"javascript:window.__xss=1\">",
    "{{7*7}}",
    "${7*7}",
    "{% raw %}{{ 7*7 }}{% endraw %}",
    "<%= 7*7 %>",
    "</textarea><script>window.__xss=1</script>",
    "</title><script>window.__xss=1</script>",
    "<!--<script>window.__xss=1</script>-->",
    "<scr<script>ipt>window.__xss=1</scr</script>ipt>",
    "<div hx-get=\"/me\" hx-trigger=\"load\" hx-on:htmx:load=\"window.__xss=1\">x</div>",
    "<form action=\"javascript:window.__xss=1\"><button>go</button></form>",
    "&lt;script&gt;window.__xss=1&lt;/script&gt;",
    "<base href=\"//127.0.0.9/\">",
];

/// Test double: answers with the agent's own system prompt (so the outputs
/// are the payloads too).
struct EchoSystemGenerator;

impl arena_server::work::generate::Generator for EchoSystemGenerator {
    fn generate(
        &self,
        jobs: Vec<arena_server::work::generate::GenJob>,
    ) -> futures_util::future::BoxFuture<'static, Vec<anyhow::Result<arena_server::work::generate::GenOutput>>> {
        let out = jobs
            .into_iter()
            .map(|j| {
                Ok(arena_server::work::generate::GenOutput {
                    text: j.system.clone(),
                    finish: "end_of_turn".into(),
                    tokens: 3,
                })
            })
            .collect();
        Box::pin(std::future::ready(out))
    }
}

async fn no_script_ran(b: &Browser, path: &str) {
    let ran: Value = b.client.execute("return window.__xss || 0", vec![]).await.unwrap();
    assert_eq!(ran, 0, "a payload ran on {path}");
    let alert = b.client.get_alert_text().await;
    assert!(alert.is_err(), "a dialog opened on {path}: {alert:?}");
    let injected: Value = b
        .client
        .execute(
            "return {
               handlers: document.querySelectorAll('[onerror],[onload],[onmouseover],[onfocus],[ontoggle],[hx-on\\\\:htmx\\\\:load]').length,
               scripts: Array.from(document.scripts).filter(s => !(s.getAttribute('src') || '').startsWith('/static/')).length,
               frames: document.querySelectorAll('iframe,object,embed,base,meta[http-equiv]').length,
               js_links: Array.from(document.querySelectorAll('a[href],form[action]')).filter(e => /^\\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('action') || '')).length
             }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!({"handlers": 0, "scripts": 0, "frames": 0, "js_links": 0}), "{path}");
}

#[tokio::test]
async fn hostile_text_is_shown_as_text_on_every_page() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let described = quick_space("quick", 2, 4).replace("Quick arithmetic for tests", XSS[0]);
    arena.publish(&dana, &described, json!({})).await;
    // A Space whose rubric is a payload (shown in its rules; never judged here).
    let rubric = quick_space("rubric", 2, 1)
        .replace("[judge]\nmode = \"none\"", &format!("[judge]\nmode = \"pairwise\"\nrubric = {:?}", XSS[1]));
    arena.publish(&dana, &rubric, json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    let mut agents = Vec::new();
    for (i, payload) in XSS.iter().enumerate() {
        let owner = if i % 2 == 0 { &ada } else { &bob };
        let name: String = payload.chars().take(60).collect::<String>().trim().to_owned();
        let (status, body) =
            owner.post("/agents", json!({"name": name, "system_prompt": payload, "sampling": {"seed": 1}})).await;
        let name = if status == 201 {
            name
        } else {
            // A name the rules refuse (too long, say) still goes in as a prompt.
            let plain = format!("agent {i}");
            let (status, again) = owner.post("/agents", json!({"name": plain, "system_prompt": payload})).await;
            assert_eq!(status, 201, "{body} / {again}");
            plain
        };
        let (_, list) = owner.get("/agents").await;
        let id = list.as_array().unwrap().iter().find(|a| a["name"] == name.as_str()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = owner.post(&format!("/agents/{id}/entries"), json!({"space": "quick"})).await;
        assert_eq!(status, 201, "{body}");
        agents.push(id);
    }
    arena.start(arena_server::app::Roles::ALL, Some(std::sync::Arc::new(EchoSystemGenerator)));
    arena.wait_settled(8, 60).await;
    arena.pause_all().await;
    let matches: Vec<uuid::Uuid> = sqlx::query_scalar("select id from matches where status = 'settled' limit 8")
        .fetch_all(&arena.db)
        .await
        .unwrap();

    let b = Browser::start(&arena, 1280, 1400).await;
    b.sign_in("ada", "correct horse battery").await;
    assert!(b.wait_text("nav", "ada", 5).await);
    let mut pages: Vec<String> =
        vec!["/".into(), "/spaces".into(), "/spaces/quick".into(), "/spaces/rubric".into(), "/me".into()];
    pages.extend(agents.iter().map(|a| format!("/agents/{a}")));
    pages.extend(matches.iter().map(|m| format!("/matches/{m}")));
    for path in &pages {
        b.open(path).await;
        no_script_ran(&b, path).await;
    }
    // The payloads are there, as text.
    b.open("/spaces/quick").await;
    let text = b.body().await;
    assert!(text.contains("<script>window.__xss=1</script>"), "the description shows as text");
    b.open(&format!("/matches/{}", matches[0])).await;
    let text = b.body().await;
    assert!(XSS.iter().any(|p| text.contains(p)), "the outputs show as text: {text}");
    b.shot("xss-match-desktop").await;
    b.open(&format!("/agents/{}", agents[0])).await;
    assert!(b.body().await.contains("<script>window.__xss=1</script>"), "the system prompt shows as text");
}

#[tokio::test]
async fn forms_refuse_a_missing_or_foreign_csrf_token_and_change_nothing() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let agent = ada.agent("calc", "quick").await;
    // A browser signed in as ada.
    let b = Browser::start(&arena, 1280, 1000).await;
    b.sign_in("ada", "correct horse battery").await;
    assert!(b.wait_text("nav", "ada", 5).await);
    let before: i64 =
        sqlx::query_scalar("select count(*) from entries where active").fetch_one(&arena.db).await.unwrap();
    // A form without the token, posted from the page itself: refused.
    b.open(&format!("/agents/{agent}")).await;
    let status: Value = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                                  body: 'space=quick&csrf=0000'}).then(r => done(r.status));",
            vec![json!(format!("/agents/{agent}/leave"))],
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "a wrong token is refused");
    let after: i64 =
        sqlx::query_scalar("select count(*) from entries where active").fetch_one(&arena.db).await.unwrap();
    assert_eq!(before, after);
    // The same post with the page's token works.
    b.click("form[action$='/leave'] button").await;
    assert!(b.wait_text("table", "left", 5).await, "{}", b.body().await);
    // Another site's page cannot post with ada's cookie (Origin checked).
    let foreign = reqwest::Client::new()
        .post(format!("{}/agents/{agent}/rollback", arena.address))
        .header("Origin", "http://127.0.0.9")
        .header("Cookie", "arena_csrf=aaaa")
        .form(&[("csrf", "aaaa"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

/// A Space with 20 sums, a quarter held out for the training gate.
fn sums_space() -> String {
    let prompts: Vec<String> = (1..=20)
        .map(|i| format!("  {{ prompt = \"What is {i} + {}?\", reference = \"{}\" }},", i * 3, i + i * 3))
        .collect();
    format!(
        "name = \"sums\"\ndescription = \"Sums\"\nagents_per_match = 2\nmax_new_tokens = 8\nentry_fee = 1\n\n\
         [prompts]\ninline = [\n{}\n]\n\n[matchmaking]\nrating_window = 10000\nmax_concurrent_matches = 4\n\n\
         [[verifiers]]\nname = \"correct\"\nkind = \"answer\"\nmode = \"numeric\"\nhard = true\n\n\
         [judge]\nmode = \"none\"\n\n[pairs]\nmin_margin = 0.1\n\n[training]\nholdout = 0.25\n",
        prompts.join("\n")
    )
}

#[tokio::test]
async fn the_owner_trains_sees_the_curves_rolls_back_and_revokes_a_token() {
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &sums_space(), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let agent = ada.agent("learner", "sums").await;
    arena.user("bob", "player").await.agent("rival", "sums").await;
    arena.start(Roles { web: true, runtime: true, judge: true, ..Roles::NONE }, None);
    let made = crate::helpers::eventually(60, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from pairs").fetch_one(&arena.db).await.unwrap() >= 18
    })
    .await;
    assert!(made, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    arena.start(Roles { trainer: true, ..Roles::NONE }, None);

    let b = Browser::start(&arena, 1280, 2200).await;
    b.sign_in("ada", "correct horse battery").await;
    assert!(b.wait_text("nav", "ada", 5).await);
    b.open(&format!("/agents/{agent}")).await;
    b.fill("#train-steps", "2").await;
    b.click("form[action$='/train'] button").await;
    assert!(b.wait_text(".job", "Price", 5).await, "{}", b.body().await);
    // The job runs on the real model; the page shows its end and its curves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        b.open(&format!("/agents/{agent}")).await;
        let text = b.text(".job").await;
        if text.contains("promoted") || text.contains("rejected") || text.contains("failed") {
            assert!(!text.contains("failed"), "{text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let curves: Value = b
        .client
        .execute("return Array.from(document.querySelectorAll('.job svg title')).map(t => t.textContent)", vec![])
        .await
        .unwrap();
    assert_eq!(curves, json!(["Training loss per step", "Reward accuracy and margin per step"]), "{curves}");
    assert!(b.body().await.contains("Gate:"), "the gate's decision is shown");
    b.shot("agent-owner-desktop").await;
    // Make the other version current (roll back, or forward to the trained one).
    let before: i32 = sqlx::query_scalar("select current_version from agents where id = $1")
        .bind(uuid::Uuid::parse_str(&agent).unwrap())
        .fetch_one(&arena.db)
        .await
        .unwrap();
    b.click("#versions form button").await;
    assert!(b.wait_text("#versions", "current", 5).await);
    let after: i32 = sqlx::query_scalar("select current_version from agents where id = $1")
        .bind(uuid::Uuid::parse_str(&agent).unwrap())
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_ne!(before, after, "the button made another version current");

    // A new version by hand: a new system prompt, kept as the current one.
    b.click("#new-version summary").await;
    b.fill("#v-system_prompt", "Think, then answer with the number only.").await;
    b.fill("#v-temperature", "11").await;
    b.click("#new-version button").await;
    assert!(b.wait_text("#new-version", "outside 0..=10", 5).await, "a bad temperature is named: {}", b.body().await);
    b.fill("#v-temperature", "0.5").await;
    b.fill("#v-note", "a calmer prompt").await;
    b.click("#new-version button").await;
    assert!(b.wait_text("#versions", "a calmer prompt", 5).await, "{}", b.body().await);
    let (prompt, current): (String, bool) = sqlx::query_as(
        "select v.system_prompt, a.current_version = v.version from agent_versions v join agents a on a.id = v.agent_id
         where v.agent_id = $1 order by v.version desc limit 1",
    )
    .bind(uuid::Uuid::parse_str(&agent).unwrap())
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert_eq!((prompt.as_str(), current), ("Think, then answer with the number only.", true));
    // A training policy: every 50 new pairs in sums.
    b.click("#p-mode").await;
    b.client
        .execute(
            "document.getElementById('p-mode').value = 'every'; document.getElementById('p-every').value = '50'",
            vec![],
        )
        .await
        .unwrap();
    b.click("form[action$='/policy'] button").await;
    assert!(b.wait_text("body", "sums: every 50 pairs", 5).await, "{}", b.body().await);

    // A token: made, shown once, revoked.
    b.open("/me").await;
    b.fill("#token-name", "laptop").await;
    b.click("form[action='/me/tokens'] button").await;
    assert!(b.wait_text(".notice.good", "shown only this once", 5).await, "{}", b.body().await);
    let secret = b.text("#new-token").await;
    assert!(secret.starts_with("arena_"), "{secret}");
    let me = || reqwest::Client::new().get(arena.url("/me")).bearer_auth(secret.trim()).send();
    assert_eq!(me().await.unwrap().status(), 200);
    b.shot("me-desktop").await;
    b.open("/me").await;
    assert!(!b.body().await.contains(secret.trim()), "the secret is not shown again");
    b.click("button[aria-label='Revoke token laptop']").await;
    assert!(b.wait_text("#tokens", "revoked", 5).await, "{}", b.body().await);
    assert_eq!(me().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_buyer_filters_the_pairs_sees_a_sample_and_buys_an_export() {
    let arena = Arena::new().await;
    let dana = league_with_matches(&arena, 12).await;
    arena.pause_all().await;
    arena.wait_settled(12, 30).await;
    arena.user("bea", "buyer").await;
    let b = Browser::start(&arena, 1280, 2000).await;
    b.sign_in("bea", "correct horse battery").await;
    assert!(b.wait_text("nav", "bea", 5).await);
    b.open("/data").await;
    let all: i64 = sqlx::query_scalar("select count(*) from pairs").fetch_one(&arena.db).await.unwrap();
    assert!(b.wait_text("#pair-count", &all.to_string(), 5).await, "{}", b.body().await);
    assert!(b.body().await.contains("licence CC-BY-4.0"));
    let bars: Value =
        b.client.execute("return document.querySelectorAll('svg.chart rect').length", vec![]).await.unwrap();
    assert!(bars.as_i64().unwrap() >= 10, "a margin histogram: {bars}");
    // The count follows the form as it changes, without a reload.
    b.fill("#f-min_margin", "3").await;
    assert!(
        b.wait_text("#live-count", "min_margin", 5).await,
        "an impossible margin is named: {}",
        b.text("#live-count").await
    );
    b.fill("#f-min_margin", "0.5").await;
    let over: i64 =
        sqlx::query_scalar("select count(*) from pairs where margin >= 0.5").fetch_one(&arena.db).await.unwrap();
    assert!(b.wait_text("#pair-count", &over.to_string(), 5).await, "{}", b.text("#live-count").await);
    b.click("#filter button").await;
    assert!(b.wait_text("body", "Chosen", 5).await);
    let samples: Value = b.client.execute("return document.querySelectorAll('.outputs').length", vec![]).await.unwrap();
    assert_eq!(samples.as_i64().unwrap(), over.min(10));
    b.shot("data-desktop").await;

    // The designer now sells the pairs at 2 credits each: the page prices
    // the selection, the buyer accepts the licence and buys it as Parquet.
    let priced = format!("{}\n[data]\nprice_per_pair = 2\n", quick_space("quick", 2, 2));
    arena.publish(&dana, &priced, json!({})).await;
    b.open("/data?min_margin=0.5").await;
    assert!(b.wait_text("#pair-price", &format!("{} credits", 2 * over), 5).await, "{}", b.text("#live-count").await);
    assert!(b.body().await.contains("2 credits a pair"));
    b.client.execute("document.getElementById('x-file').value = 'parquet'", vec![]).await.unwrap();
    b.click("#x-accept").await;
    b.click("#x-buy").await;
    assert!(b.wait_text("h1", "Your exports", 5).await, "{}", b.body().await);
    assert!(b.wait_text("#exports .badge", "done", 30).await, "{}", b.text("#exports").await);
    assert!(b.wait_text("#exports", "pairs.parquet", 5).await, "the list refreshed: {}", b.text("#exports").await);
    assert!(b.text("#exports").await.contains(&format!("{} credits", 2 * over)));
    b.shot("data-exports-desktop").await;
    let balance: i64 = sqlx::query_scalar(
        "select a.balance from accounts a join users u on u.id = a.user_id where u.username = 'bea'",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert_eq!(balance, 1000 - 2 * over, "the buyer paid the price shown");
    // The download link works with the page's session and matches its hash.
    let size: Value = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const a = [...document.querySelectorAll('#exports a')].find(a => a.textContent === 'pairs.parquet');
             fetch(a.getAttribute('href')).then(r => r.arrayBuffer()).then(b => done(b.byteLength));",
            vec![],
        )
        .await
        .unwrap();
    let recorded: i64 =
        sqlx::query_scalar("select (files->0->>'bytes')::bigint from data_exports").fetch_one(&arena.db).await.unwrap();
    assert_eq!(size.as_i64(), Some(recorded));
    b.client.set_window_size(360, 1600).await.unwrap();
    b.shot("data-exports-phone").await;
    b.open("/data").await;
    assert!(b.wait_text("h1", "Preference data", 5).await);
    b.shot("data-buyer-phone").await;
}

/// Sets the studio editor's text, then types one space at its end as a
/// person would (a real key press: the live check listens to keyup).
async fn set_source(b: &Browser, text: &str) {
    b.client
        .execute("const t = document.getElementById('source'); t.value = arguments[0]; t.focus();", vec![json!(text)])
        .await
        .unwrap();
    b.client.find(Locator::Css("#source")).await.unwrap().send_keys(" ").await.unwrap();
}

#[tokio::test]
async fn a_designer_checks_a_draft_dry_runs_it_publishes_and_compares_versions() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let source = quick_space("quick", 2, 2);
    arena.publish(&dana, &source, json!({})).await;
    let mine = dana.agent("mine", "quick").await;
    let b = Browser::start(&arena, 1280, 1600).await;
    b.sign_in("dana", "correct horse battery").await;
    assert!(b.wait_text("nav", "Studio", 5).await, "designers see the studio link");
    b.open("/studio").await;
    assert!(b.wait_text("table.spaces", "quick", 5).await, "{}", b.body().await);
    b.shot("studio-desktop").await;

    // The editor checks as the designer types: an error with its line, then the fix.
    b.open("/studio/quick").await;
    assert!(b.wait_text("#check", "Valid", 5).await, "{}", b.body().await);
    set_source(&b, &source.replace("agents_per_match = 2", "agents_per_match = 99")).await;
    assert!(b.wait_text("#check", "agents_per_match", 5).await, "{}", b.text("#check").await);
    assert!(b.text("#check .where").await.starts_with("3:"), "the error is placed: {}", b.text("#check").await);
    // Line numbers run beside the text; the error's link puts the caret on its line.
    let gutter = b.text("#gutter").await;
    assert!(gutter.lines().count() >= 30 && gutter.starts_with('1'), "{gutter}");
    b.click("#check .where").await;
    let caret: Value = b
        .client
        .execute(
            "const t = document.getElementById('source'); return t.value.slice(0, t.selectionStart).split('\\n').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(caret.as_i64(), Some(3), "the caret is on line 3");
    // A dry run of the broken draft is refused with its errors; nothing runs.
    b.click("#dry-run").await;
    assert!(b.wait_text("#publish-error", "fix them before a dry run", 5).await, "{}", b.body().await);
    assert!(b.text("#check").await.contains("agents_per_match 99"), "{}", b.text("#check").await);
    b.shot("studio-error-desktop").await;
    let raised = source.replace("entry_fee = 10", "entry_fee = 20");
    set_source(&b, &raised).await;
    assert!(b.wait_text("#check", "Entry costs 20 credits", 5).await, "{}", b.text("#check").await);

    // A dry run on the real model: outputs, checks, a summary; nothing stored or paid.
    let before: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from matches), (select count(*) from ledger_entries), (select count(*) from space_versions)",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    b.fill("#dr-matches", "2").await;
    // The designer's own agent takes a seat beside the baselines.
    b.client.execute(&format!("document.getElementById('dr-agent-1').value = '{mine}'"), vec![]).await.unwrap();
    b.click("#dry-run").await;
    // Progress is live; the report replaces it when the last match is judged.
    assert!(b.wait_text("h1", "Dry run of quick", 10).await, "{}", b.body().await);
    assert!(b.wait_text("#dr-credits", "0", 180).await, "{}", b.body().await);
    let cards: Value = b.client.execute("return document.querySelectorAll('.outputs').length", vec![]).await.unwrap();
    assert_eq!(cards.as_i64(), Some(2));
    assert!(b.body().await.contains("correct"), "the verifier's rate is shown");
    assert!(b.body().await.contains("mine v1"), "the designer's agent played: {}", b.body().await);
    b.shot("studio-dry-run-desktop").await;
    let after: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from matches), (select count(*) from ledger_entries), (select count(*) from space_versions)",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert_eq!(before, after, "a dry run stores and pays nothing");

    // The red team: the built-in arithmetic corpus against the draft's checks.
    b.open("/studio/quick").await;
    b.client.execute("document.getElementById('rt-corpus').value = 'arithmetic'", vec![]).await.unwrap();
    b.click("#red-team").await;
    assert!(b.wait_text("h1", "Red team of quick", 60).await, "{}", b.body().await);
    assert!(b.wait_text("#rt-configs", "all defenses", 120).await, "{}", b.body().await);
    assert!(b.text("#rt-families").await.contains("injection"), "{}", b.text("#rt-families").await);
    b.shot("studio-red-team-desktop").await;

    // Publishing the raised fee makes version 2, flagged, with its diff.
    b.open("/studio/quick").await;
    set_source(&b, &raised).await;
    b.click("#publish").await;
    assert!(b.wait_text("h1", "quick: versions", 5).await, "{}", b.body().await);
    assert!(b.text(".money").await.contains("entry fee 10 → 20"), "{}", b.body().await);
    // The designer's entered agent accepted version 1's terms: it waits for a re-entry.
    let (accepted, terms): (i32, i32) = sqlx::query_as(
        "select e.accepted_version, s.terms_version from entries e join spaces s on s.id = e.space_id
         where e.agent_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&mine).unwrap())
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert!(accepted < terms, "a raised fee is not forced on an entered player ({accepted} < {terms})");
    let diff = b.text("#diff").await;
    assert!(diff.contains("- entry_fee = 10") && diff.contains("+ entry_fee = 20"), "{diff}");
    b.shot("studio-versions-desktop").await;
    // The file as typed (the browser's CRLF line ends back to LF, and the
    // one space typed at the end), hashed as the API and the CLI hash it.
    let (stored, sha): (String, String) = sqlx::query_as("select source, sha256 from space_versions where version = 2")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_eq!(stored, format!("{raised} "));
    assert_eq!(sha, arena_server::store::spaces::content_sha256(&stored, &Default::default()));

    // A file beside the TOML: uploaded, it makes version 3 (a name outside the Space is refused).
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("extra.jsonl");
    std::fs::write(&upload, "{\"prompt\": \"What is 1 + 1?\", \"reference\": \"2\"}\n").unwrap();
    b.open("/studio/quick").await;
    b.fill("#u-path", "../escape.jsonl").await;
    b.client.find(Locator::Css("#u-file")).await.unwrap().send_keys(upload.to_str().unwrap()).await.unwrap();
    b.click("#upload-file").await;
    assert!(b.wait_text("#publish-error", "path", 5).await, "{}", b.body().await);
    b.fill("#u-path", "prompts/extra.jsonl").await;
    b.client.find(Locator::Css("#u-file")).await.unwrap().send_keys(upload.to_str().unwrap()).await.unwrap();
    b.click("#upload-file").await;
    assert!(b.wait_text("h1", "quick: versions", 5).await, "{}", b.body().await);
    let files: Value =
        sqlx::query_scalar("select files from space_versions where version = 3").fetch_one(&arena.db).await.unwrap();
    assert!(files["prompts/extra.jsonl"].as_str().unwrap().contains("1 + 1"), "{files}");

    // A new Space whose TOML names its own prompt file, published with it.
    b.open("/studio/new?example=arithmetic").await;
    let example = b.client.execute("return document.getElementById('source').value", vec![]).await.unwrap();
    let draft = example
        .as_str()
        .unwrap()
        .replacen("name = \"arithmetic\"", "name = \"sums\"", 1)
        .replace("prompts/arithmetic.jsonl", "prompts/sums.jsonl");
    set_source(&b, &draft).await;
    let sums = dir.path().join("sums.jsonl");
    let lines: String =
        (1..=30).map(|i| format!("{{\"prompt\": \"What is {i} + {i}?\", \"reference\": \"{}\"}}\n", 2 * i)).collect();
    std::fs::write(&sums, lines).unwrap();
    b.fill("#n-path", "prompts/sums.jsonl").await;
    b.client.find(Locator::Css("#n-file")).await.unwrap().send_keys(sums.to_str().unwrap()).await.unwrap();
    b.click("#publish-with-file").await;
    assert!(b.wait_text("h1", "sums: versions", 5).await, "{}", b.body().await);
    let files: Value = sqlx::query_scalar(
        "select v.files from space_versions v join spaces s on s.id = v.space_id where s.slug = 'sums'",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert!(files["prompts/sums.jsonl"].as_str().unwrap().contains("What is 30 + 30?"), "{files}");

    b.open("/studio/quick/analytics").await;
    assert!(b.wait_text("h1", "quick: analytics", 5).await);
    b.client.set_window_size(360, 1600).await.unwrap();
    b.shot("studio-analytics-phone").await;
    b.open("/studio/quick").await;
    b.shot("studio-editor-phone").await;
}

/// An owner lends a machine: the agent page's choice, a `work` token made
/// on /me, the real `arena worker` generating matches, a cheating worker of
/// hers caught; /workers shows both, the finding, the earnings chart, at
/// phone width with every input labelled.
#[tokio::test]
async fn a_worker_owner_sees_her_workers_their_audits_and_earnings() {
    use crate::workers::{open_league, output_of, spawn_worker};
    let (arena, players) = open_league(3600).await;
    let ada = &players[0];
    // Ada's first agent is opted in by the API; the page shows the choice
    // and takes it back and forth.
    let agent: String = sqlx::query_scalar::<_, uuid::Uuid>("select id from agents where owner_id = $1")
        .bind(uuid::Uuid::parse_str(&ada.id).unwrap())
        .fetch_one(&arena.db)
        .await
        .unwrap()
        .to_string();
    let b = Browser::start(&arena, 360, 1600).await;
    b.sign_in("ada", "correct horse battery").await;
    assert!(b.wait_text("nav", "ada", 10).await, "signed in before the next page");
    b.open(&format!("/agents/{agent}")).await;
    let checked = |b: &Browser| {
        let client = b.client.clone();
        async move { client.execute("return document.getElementById('open-workers-box').checked", vec![]).await.unwrap() }
    };
    assert_eq!(checked(&b).await, json!(true));
    assert!(b.text("#open-workers-note").await.contains("sees this agent's system prompt and adapter"));
    // Clicked by script: at 360 px a small checkbox under the sticky
    // header can have its click intercepted (seen once in a loaded run).
    let toggle_and_save = |b: &Browser| {
        let client = b.client.clone();
        async move {
            client
                .execute(
                    "document.getElementById('open-workers-box').click();
                     document.querySelector('#open-workers button').click()",
                    vec![],
                )
                .await
                .unwrap();
        }
    };
    let stored = |want: bool| {
        let (db, agent) = (arena.db.clone(), agent.clone());
        crate::helpers::eventually(10, move || {
            let (db, agent) = (db.clone(), agent.clone());
            async move {
                sqlx::query_scalar::<_, bool>("select open_workers from agents where id = $1")
                    .bind(uuid::Uuid::parse_str(&agent).unwrap())
                    .fetch_one(&db)
                    .await
                    .unwrap()
                    == want
            }
        })
    };
    toggle_and_save(&b).await;
    assert!(stored(false).await, "the form turned it off");
    b.open(&format!("/agents/{agent}")).await;
    assert_eq!(checked(&b).await, json!(false));
    toggle_and_save(&b).await;
    assert!(stored(true).await, "the form turned it on");
    b.open(&format!("/agents/{agent}")).await;
    assert_eq!(checked(&b).await, json!(true), "{}", b.body().await);

    // Wendy makes a work token on /me, then runs an honest worker and a
    // cheating one.
    arena.user("wendy", "player").await;
    let w = Browser::start(&arena, 360, 1600).await;
    w.sign_in("wendy", "correct horse battery").await;
    assert!(w.wait_text("nav", "wendy", 10).await, "signed in before the next page");
    w.open("/me").await;
    w.fill("#token-name", "box").await;
    w.client.execute("document.getElementById('scope-work').click()", vec![]).await.unwrap();
    w.click("form[action='/me/tokens'] button").await;
    assert!(w.wait_text(".notice.good", "shown only this once", 5).await, "{}", w.body().await);
    let token = w.text("#new-token").await.trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let honest = spawn_worker(&arena, &token, dir.path(), None);
    arena.wait_settled(2, 240).await;
    let log = output_of(honest);
    let cheat_dir = tempfile::tempdir().unwrap();
    let mut cheat = spawn_worker(&arena, &token, cheat_dir.path(), Some("edit-tokens"));
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while cheat.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the cheat was not stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cheat_log = output_of(cheat);
    arena.pause_all().await;

    w.open("/workers").await;
    let table = w.text("#workers").await;
    assert!(table.contains("banned until"), "{table}\n{log}\n{cheat_log}");
    assert!(w.text("#findings").await.contains("the seeded sampler draws"), "{}", w.body().await);
    let chart: Value = w
        .client
        .execute("return Array.from(document.querySelectorAll('svg title')).map(t => t.textContent)", vec![])
        .await
        .unwrap();
    assert_eq!(chart, json!(["Credits paid into escrow per day"]));
    assert!(w.text("#worker-command").await.contains("arena worker --server http://"));
    let wide: Value =
        w.client.execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![]).await.unwrap();
    assert_eq!(wide, false, "/workers scrolls sideways at 360 px");
    w.shot("workers-phone").await;
    let d = Browser::start(&arena, 1280, 1400).await;
    d.sign_in("wendy", "correct horse battery").await;
    assert!(d.wait_text("nav", "wendy", 10).await, "signed in before the next page");
    d.open("/workers").await;
    assert!(d.wait_text("#workers", "banned until", 5).await, "{}", d.body().await);
    d.shot("workers-desktop").await;
    // Another player sees none of hers.
    b.open("/workers").await;
    assert!(b.wait_text("#no-workers", "No workers yet", 5).await, "{}", b.body().await);
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// Presses `key` on the keyboard (WebDriver key actions: a real key press,
/// not a script event), wherever the focus is.
async fn press(b: &Browser, key: char) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let actions =
        KeyActions::new("keyboard".to_owned()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    b.client.perform_actions(actions).await.unwrap();
}

/// The words of a page's visible text, lower case.
async fn words_of(b: &Browser) -> Vec<String> {
    b.body()
        .await
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_voter_votes_by_keyboard_at_phone_width_and_the_designer_reads_the_audit() {
    let (arena, _dana, _players) = crate::votes::voting_league(4, 300, 0).await;
    arena.user("vic", "player").await;
    let b = Browser::start(&arena, 360, 1400).await;
    b.sign_in("vic", "correct horse battery").await;
    assert!(b.wait_text("nav", "vic", 10).await, "signed in before the next page");
    let mut counted = 0;
    let settled: i64 =
        sqlx::query_scalar("select count(*) from matches where status = 'settled'").fetch_one(&arena.db).await.unwrap();
    for round in 0..settled {
        b.open("/vote").await;
        assert!(b.wait_text("#battle-question", "Which answer is right?", 5).await, "{}", b.body().await);
        // Before the vote nothing names an agent, an owner or the judge's call.
        let words = words_of(&b).await;
        for secret in ["ada", "bob", "calc", "guess", "dana", "confidence", "verdict"] {
            assert!(!words.contains(&secret.to_owned()), "round {round}: {secret} shown before the vote");
        }
        if round == 0 {
            let wide: Value = b
                .client
                .execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![])
                .await
                .unwrap();
            assert_eq!(wide, false, "/vote scrolls sideways at 360 px");
            // Every button is labelled by its text and says its key.
            let labels: Value = b
                .client
                .execute(
                    "return Array.from(document.querySelectorAll('#vote-form button')).map(b => b.textContent.trim() + '|' + b.getAttribute('aria-keyshortcuts'))",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(
                labels,
                json!(["A is better 1|1", "B is better 2|2", "Tie 3|3", "Both are bad 4|4", "Skip 5|5"])
            );
            b.shot("vote-card-phone").await;
        }
        // Read, then vote with the keyboard: 1 (A) or 2 (B).
        tokio::time::sleep(Duration::from_millis(450)).await;
        let a_right = b.text("#answer-a").await.starts_with("The answer is");
        press(&b, if a_right { '1' } else { '2' }).await;
        assert!(
            b.wait_text("#vote-status", "", 5).await && b.wait_text("#reveal-a", "by", 5).await,
            "{}",
            b.body().await
        );
        let status = b.text("#vote-status").await;
        counted += i64::from(status.contains("Your vote counts"));
        let revealed = b.text("#reveal").await;
        assert!(revealed.contains("calc by ada") && revealed.contains("guess by bob"), "{revealed}");
        assert!(revealed.contains("you agreed"), "the judge's hard check agrees: {revealed}");
        assert_eq!(b.path().await, "/vote", "htmx swapped the reveal in place");
        if round == 0 {
            b.shot("vote-reveal-phone").await;
            // Report the battle from the reveal.
            b.click("#report-form button").await;
            assert!(b.wait_text("#reported", "Reported", 5).await, "{}", b.body().await);
        }
        // "n" takes the next battle.
        press(&b, 'n').await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(counted, settled, "every vote read for long enough counts, one per match");
    b.open("/vote").await;
    assert!(b.wait_text("#no-battle", "Nothing to vote on", 5).await, "{}", b.body().await);
    let reports: i64 = sqlx::query_scalar("select count(*) from vote_reports").fetch_one(&arena.db).await.unwrap();
    assert_eq!(reports, 1);

    // The designer reads the audit; the Space page shows the card.
    let d = Browser::start(&arena, 1280, 1400).await;
    d.sign_in("dana", "correct horse battery").await;
    assert!(d.wait_text("nav", "dana", 10).await, "signed in before the next page");
    d.open("/studio/quick/audit").await;
    assert!(d.wait_text("h1", "The judge against people", 5).await, "{}", d.body().await);
    assert!(d.text("main").await.contains(&format!("In all: {settled} counted votes, 1 voter.")), "{}", d.body().await);
    assert!(d.text("#confusion").await.contains("tie"));
    d.shot("studio-audit-desktop").await;
    d.open("/spaces/quick").await;
    assert!(d.wait_text("#judge-vs-people", "Which answer is right?", 5).await, "{}", d.body().await);
    assert!(d.text("#judge-vs-people a[href='/studio/quick/audit']").await.contains("audit"));
    // Another player's: no audit link; a stranger's audit page: not found.
    b.open("/spaces/quick").await;
    assert!(b.wait_text("#judge-vs-people", "Vote", 5).await);
    let links: Value = b
        .client
        .execute("return document.querySelectorAll(\"#judge-vs-people a[href$='/audit']\").length", vec![])
        .await
        .unwrap();
    assert_eq!(links, json!(0));
    arena.ledger_ok().await;
}
