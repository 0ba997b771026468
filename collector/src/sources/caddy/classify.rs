//! Traffic classes of Caddy requests: who is behind each `http` row — `client_class`
//! (`human`, `search_bot`, `ai_crawler`, `monitor`, `scanner`, `other_bot`) and
//! `client_name` (GPTBot, Googlebot, Uptime-Kuma, curl, …; null for browsers).
//!
//! From the User-Agent, in this order (the first that matches decides):
//! 1. scanner tools that say so (zgrab, masscan, Nmap, sqlmap, Nuclei, CensysInspect, …)
//!    → `scanner`;
//! 2. the AI crawler list kept in the repo, `ai_crawlers.txt` (curated from the
//!    ai-robots-txt project; versioned, its source and update rule in its header); the
//!    longest matching token names the agent → `ai_crawler`;
//! 3. search engine crawlers ([`SEARCH`]) → `search_bot`;
//! 4. uptime and health checkers ([`MONITORS`], this collector's own probes included) →
//!    `monitor`;
//! 5. anything that is not browser-like (does not start with `Mozilla/`, `Opera/` or
//!    `Dalvik/`), is empty, or that the `isbot` crate's pattern list (MIT, derived from
//!    the maintained npm isbot list) calls a bot → `other_bot`, named by its product token
//!    (`curl`, `python-requests`) or the bot-like word inside it (`AhrefsBot`,
//!    `HeadlessChrome`);
//! 6. otherwise `human`.
//!
//! Then the path: a `human` or `other_bot` request for a path only vulnerability
//! scanners ask for (`/.env`, `/.git/`, `/phpmyadmin`, `/vendor/phpunit/`, path
//! traversal, …, see [`SCANNER_PATHS`]) becomes `scanner`; WordPress entry points
//! (`/wp-login.php`, `/xmlrpc.php`, `/wp-admin`) count only when the vhost answered
//! 404 — a vhost without WordPress, so the request was a probe. Named crawlers keep their
//! class (a search engine may follow a link to `/wp-login.php`).
//!
//! Cost: the User-Agent part is computed once per distinct User-Agent and cached (at
//! most [`CACHE_MAX`] entries; the cache is emptied when full, so a flood of random
//! User-Agents costs memory once and recomputation, never unbounded growth). The path
//! part is a few prefix comparisons on a lower-cased copy kept in a reused buffer.

use std::collections::HashMap;
use std::sync::Arc;

/// Entries of the User-Agent cache before it is emptied.
pub const CACHE_MAX: usize = 8192;
/// The AI crawler list.
pub const AI_CRAWLERS: &str = include_str!("ai_crawlers.txt");

/// The class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// A browser.
    Human,
    /// A search engine crawler.
    SearchBot,
    /// An AI crawler or AI agent.
    AiCrawler,
    /// An uptime or health checker.
    Monitor,
    /// A vulnerability scanner or probe.
    Scanner,
    /// Any other automated client.
    OtherBot,
}

impl ClientClass {
    /// The value of `client_class`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientClass::Human => "human",
            ClientClass::SearchBot => "search_bot",
            ClientClass::AiCrawler => "ai_crawler",
            ClientClass::Monitor => "monitor",
            ClientClass::Scanner => "scanner",
            ClientClass::OtherBot => "other_bot",
        }
    }
}

/// Scanner tools by User-Agent token (lower case) and name.
pub const SCANNER_AGENTS: &[(&str, &str)] = &[
    ("zgrab", "zgrab"),
    ("masscan", "masscan"),
    ("nmap scripting engine", "Nmap"),
    ("nmap", "Nmap"),
    ("sqlmap", "sqlmap"),
    ("nikto", "Nikto"),
    ("nuclei", "Nuclei"),
    ("censysinspect", "CensysInspect"),
    ("expanse, a palo alto networks company", "Expanse"),
    ("internetmeasurement", "InternetMeasurement"),
    ("l9explore", "LeakIX"),
    ("l9tcpid", "LeakIX"),
    ("leakix", "LeakIX"),
    ("wpscan", "WPScan"),
    ("dirbuster", "DirBuster"),
    ("gobuster", "gobuster"),
    ("fuzz faster u fool", "ffuf"),
    ("netsystemsresearch", "NetSystemsResearch"),
    ("modatscanner", "ModatScanner"),
    ("onyphe", "ONYPHE"),
    ("zoomeye", "ZoomEye"),
    ("researchscan", "researchscan"),
    ("odin.io", "Odin"),
    ("httpx - open-source", "httpx"),
];

/// Search engine crawlers by User-Agent token (lower case) and name.
pub const SEARCH: &[(&str, &str)] = &[
    ("googlebot", "Googlebot"),
    ("google-inspectiontool", "Google-InspectionTool"),
    ("storebot-google", "Storebot-Google"),
    ("adsbot-google", "AdsBot-Google"),
    ("mediapartners-google", "Mediapartners-Google"),
    ("bingbot", "bingbot"),
    ("bingpreview", "BingPreview"),
    ("adidxbot", "adidxbot"),
    ("msnbot", "msnbot"),
    ("yandex", "YandexBot"),
    ("baiduspider", "Baiduspider"),
    ("duckduckbot", "DuckDuckBot"),
    ("applebot", "Applebot"),
    ("yahoo! slurp", "Yahoo! Slurp"),
    ("seznambot", "SeznamBot"),
    ("qwantbot", "Qwantbot"),
    ("qwantify", "Qwantbot"),
    ("petalbot", "PetalBot"),
    ("sogou", "Sogou"),
    ("mojeekbot", "MojeekBot"),
    ("yeti/", "Naver Yeti"),
    ("coccocbot", "coccocbot"),
    ("daum", "Daum"),
];

/// Uptime and health checkers by User-Agent token (lower case) and name.
pub const MONITORS: &[(&str, &str)] = &[
    ("uptime-kuma", "Uptime-Kuma"),
    ("uptimerobot", "UptimeRobot"),
    ("pingdom", "Pingdom"),
    ("statuscake", "StatusCake"),
    ("betteruptime", "Better Stack"),
    ("better uptime", "Better Stack"),
    ("betterstack", "Better Stack"),
    ("site24x7", "Site24x7"),
    ("newrelicpinger", "NewRelicPinger"),
    ("datadogsynthetics", "Datadog Synthetics"),
    ("checkly", "Checkly"),
    ("freshping", "Freshping"),
    ("hetrixtools", "HetrixTools"),
    ("updown.io", "updown.io"),
    ("nodeping", "NodePing"),
    ("oh dear", "Oh Dear"),
    ("ohdear", "Oh Dear"),
    ("gatus", "Gatus"),
    ("blackbox exporter", "Blackbox Exporter"),
    ("prometheus/", "Prometheus"),
    ("zabbix", "Zabbix"),
    ("check_http", "Nagios check_http"),
    ("monitoring-plugins", "Monitoring Plugins"),
    ("kube-probe", "kube-probe"),
    ("elb-healthchecker", "ELB-HealthChecker"),
    ("amazon-route53-health-check", "Route53 Health Check"),
    ("googlestackdrivermonitoring", "Google Cloud Monitoring"),
    ("cloudflare-healthchecks", "Cloudflare Health Checks"),
    ("lake-collector", "lake-collector"),
];

/// Path prefixes (lower case) only vulnerability scanners ask for.
pub const SCANNER_PATHS: &[&str] = &[
    "/.env",
    "/.git",
    "/.svn/",
    "/.hg/",
    "/.aws/",
    "/.ssh/",
    "/.docker/",
    "/.vscode/",
    "/.idea/",
    "/.ds_store",
    "/.htpasswd",
    "/.htaccess",
    "/wp-config.php",
    "/phpmyadmin",
    "/pma/",
    "/myadmin",
    "/mysqladmin",
    "/phpinfo.php",
    "/vendor/phpunit/",
    "/boaform/",
    "/hnap1",
    "/_ignition/",
    "/cgi-bin/luci",
    "/shell",
    "/+cscoe+/",
    "/remote/login",
    "/owa/auth",
    "/autodiscover/autodiscover.xml",
    "/actuator/gateway",
    "/solr/admin",
    "/config/aws.yml",
    "/telescope/requests",
];

/// Substrings (lower case) of a path that only attacks contain.
pub const SCANNER_PARTS: &[&str] = &["../", "..%2f", "%2e%2e", "/etc/passwd", "wlwmanifest.xml", "/bin/sh", "<script"];

/// WordPress entry points: a probe when the vhost answered 404 (it has no WordPress).
pub const WORDPRESS_PATHS: &[&str] =
    &["/wp-login.php", "/xmlrpc.php", "/wp-admin", "/wp-includes/", "/wp-content/plugins/"];

/// The User-Agent's verdict, cached.
#[derive(Debug, Clone)]
struct Verdict {
    class: ClientClass,
    name: Option<Arc<str>>,
}

/// One AI crawler token.
#[derive(Debug, Clone)]
struct AiAgent {
    token: String,
    name: Arc<str>,
}

/// Parses `ai_crawlers.txt`: `Token` or `Token | Name` lines, `#` comments.
pub fn parse_ai_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (token, name) = match line.split_once('|') {
            Some((t, n)) => (t.trim(), n.trim()),
            None => (line, line),
        };
        if token.len() < 4 || name.is_empty() {
            return Err(format!("line {}: {line:?}: a token of at least 4 characters, then optionally | Name", i + 1));
        }
        out.push((token.to_ascii_lowercase(), name.to_string()));
    }
    Ok(out)
}

/// Classifies requests; keep one per source (it caches).
#[derive(Debug)]
pub struct Classifier {
    bots: isbot::Bots,
    ai: Vec<AiAgent>,
    cache: HashMap<Box<str>, Verdict>,
    lower_path: String,
    lower_ua: String,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// A classifier with the built-in lists.
    pub fn new() -> Classifier {
        let ai = parse_ai_list(AI_CRAWLERS)
            .expect("ai_crawlers.txt is checked by a test")
            .into_iter()
            .map(|(token, name)| AiAgent { token, name: Arc::from(name) })
            .collect();
        Classifier {
            bots: isbot::Bots::default(),
            ai,
            cache: HashMap::new(),
            lower_path: String::new(),
            lower_ua: String::new(),
        }
    }

    /// Entries in the User-Agent cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The class and name of a request.
    pub fn classify(
        &mut self,
        user_agent: Option<&str>,
        path: Option<&str>,
        status: Option<i64>,
    ) -> (ClientClass, Option<Arc<str>>) {
        let ua = user_agent.unwrap_or("").trim();
        let verdict = match self.cache.get(ua) {
            Some(v) => v.clone(),
            None => {
                let v = self.by_user_agent(ua);
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
                self.cache.insert(Box::from(ua), v.clone());
                v
            }
        };
        if matches!(verdict.class, ClientClass::Human | ClientClass::OtherBot) {
            if let Some(p) = path {
                if self.scanner_path(p, status) {
                    return (ClientClass::Scanner, verdict.name);
                }
            }
        }
        (verdict.class, verdict.name)
    }

    fn scanner_path(&mut self, path: &str, status: Option<i64>) -> bool {
        self.lower_path.clear();
        self.lower_path.push_str(path);
        self.lower_path.make_ascii_lowercase();
        let p = self.lower_path.as_str();
        if SCANNER_PATHS.iter().any(|s| p.starts_with(s)) || SCANNER_PARTS.iter().any(|s| p.contains(s)) {
            return true;
        }
        status == Some(404) && WORDPRESS_PATHS.iter().any(|s| p.starts_with(s))
    }

    fn by_user_agent(&mut self, ua: &str) -> Verdict {
        let verdict = |class, name: Option<&str>| Verdict { class, name: name.map(Arc::from) };
        if ua.is_empty() || ua == "-" {
            return verdict(ClientClass::OtherBot, None);
        }
        self.lower_ua.clear();
        self.lower_ua.push_str(ua);
        self.lower_ua.make_ascii_lowercase();
        let l = self.lower_ua.as_str();
        if let Some((_, name)) = SCANNER_AGENTS.iter().find(|(t, _)| l.contains(t)) {
            return verdict(ClientClass::Scanner, Some(name));
        }
        if let Some(a) = self.ai.iter().filter(|a| l.contains(a.token.as_str())).max_by_key(|a| a.token.len()) {
            return Verdict { class: ClientClass::AiCrawler, name: Some(Arc::clone(&a.name)) };
        }
        if let Some((_, name)) = SEARCH.iter().find(|(t, _)| l.contains(t)) {
            return verdict(ClientClass::SearchBot, Some(name));
        }
        if let Some((_, name)) = MONITORS.iter().find(|(t, _)| l.contains(t)) {
            return verdict(ClientClass::Monitor, Some(name));
        }
        let browser_like = ["mozilla/", "opera/", "dalvik/"].iter().any(|p| l.starts_with(p));
        if !browser_like || self.bots.is_bot(ua) || bot_word(ua).is_some() {
            return verdict(ClientClass::OtherBot, guess_name(ua).as_deref());
        }
        verdict(ClientClass::Human, None)
    }
}

/// A word of a browser-like User-Agent that says "bot": `AhrefsBot/7.0` → `AhrefsBot`.
fn bot_word(ua: &str) -> Option<&str> {
    const MARKS: &[&str] = &[
        "bot",
        "crawler",
        "spider",
        "scraper",
        "fetcher",
        "headlesschrome",
        "lighthouse",
        "phantomjs",
        "slurp",
        "archiver",
        "preview",
    ];
    ua.split([' ', ';', '(', ')', ',', '+'])
        .map(|w| w.split('/').next().unwrap_or(w).trim())
        .filter(|w| w.len() >= 3 && !w.contains(':') && !w.contains('.'))
        .find(|w| {
            let lw = w.to_ascii_lowercase();
            MARKS.iter().any(|m| lw.contains(m)) && !lw.starts_with("cubot")
        })
}

/// A short name for an automated client: its product token when it does not pretend to
/// be a browser (`curl/8.5.0` → `curl`), else its bot-like word.
pub fn guess_name(ua: &str) -> Option<String> {
    let l = ua.to_ascii_lowercase();
    if !["mozilla/", "opera/", "dalvik/"].iter().any(|p| l.starts_with(p)) {
        let token: &str = ua.split([' ', '(', ';', ',']).next().unwrap_or("");
        let token = token.split('/').next().unwrap_or(token).trim();
        let token = token.trim_end_matches(|c: char| !c.is_alphanumeric());
        if !token.is_empty() {
            return Some(token.chars().take(64).collect());
        }
        return None;
    }
    bot_word(ua).map(|w| w.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ai_list_parses_and_has_the_big_names() {
        let list = parse_ai_list(AI_CRAWLERS).unwrap();
        assert!(list.len() > 100, "{}", list.len());
        for name in ["GPTBot", "ClaudeBot", "CCBot", "PerplexityBot", "Bytespider", "meta-externalagent"] {
            assert!(list.iter().any(|(_, n)| n == name), "{name}");
        }
        assert!(
            AI_CRAWLERS.contains("list-version:")
                && AI_CRAWLERS.contains("https://github.com/ai-robots-txt/ai.robots.txt")
        );
        assert!(parse_ai_list("ab\n").is_err());
        assert_eq!(parse_ai_list("Foo Bot | Foo\n# c\n").unwrap(), [("foo bot".to_string(), "Foo".to_string())]);
    }

    #[test]
    fn names_are_guessed_from_product_tokens_and_bot_words() {
        assert_eq!(guess_name("curl/8.5.0").as_deref(), Some("curl"));
        assert_eq!(guess_name("python-requests/2.31.0").as_deref(), Some("python-requests"));
        assert_eq!(
            guess_name("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)").as_deref(),
            Some("AhrefsBot")
        );
        assert_eq!(guess_name("Mozilla/5.0 (Windows NT 10.0; Win64; x64)").as_deref(), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = Classifier::new();
        for i in 0..(CACHE_MAX + 10) {
            c.classify(Some(&format!("agent-{i}/1.0")), Some("/"), Some(200));
        }
        assert!(c.cached() <= CACHE_MAX);
        assert_eq!(
            c.classify(Some("agent-1/1.0"), Some("/"), Some(200)),
            (ClientClass::OtherBot, Some(Arc::from("agent-1")))
        );
    }
}
