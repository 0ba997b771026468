//! A `lake.toml` built from parts: the header every test writes the same way (`version`,
//! `data_dir`, `listen`), its nodes, the lines under `[ingest]` and `[query]`, then any
//! other sections verbatim. `[ingest]` and `[query]` are collected rather than appended
//! because TOML refuses a table declared twice, and most tests add to both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A `lake.toml` under construction; [`LakeToml::write`] puts it in its directory.
#[derive(Debug, Clone)]
pub struct LakeToml {
    dir: PathBuf,
    listen: String,
    nodes: String,
    ingest: String,
    query: String,
    sections: String,
}

impl LakeToml {
    /// A lake over `<dir>/data` listening on `127.0.0.1:<port>`, with no node yet.
    pub fn new(dir: &Path, port: u16) -> LakeToml {
        LakeToml::listening(dir, &format!("127.0.0.1:{port}"))
    }

    /// [`LakeToml::new`] with any `listen` address.
    pub fn listening(dir: &Path, listen: &str) -> LakeToml {
        LakeToml {
            dir: dir.to_path_buf(),
            listen: listen.to_string(),
            nodes: String::new(),
            ingest: String::new(),
            query: String::new(),
            sections: String::new(),
        }
    }

    /// A `[[nodes]]` entry with one ingest token.
    pub fn node(self, name: &str, token: &str) -> LakeToml {
        self.node_with(name, &format!("token = \"{token}\""))
    }

    /// A `[[nodes]]` entry with `lines` (tokens, hashes, hosts, …) after its name.
    pub fn node_with(mut self, name: &str, lines: &str) -> LakeToml {
        let _ = write!(self.nodes, "\n[[nodes]]\nname = \"{name}\"\n{lines}\n");
        self
    }

    /// Lines under `[ingest]`.
    pub fn ingest(mut self, lines: &str) -> LakeToml {
        let _ = writeln!(self.ingest, "{lines}");
        self
    }

    /// `flush_interval` under `[ingest]`.
    pub fn flush(self, interval: &str) -> LakeToml {
        self.ingest(&format!("flush_interval = \"{interval}\""))
    }

    /// Lines under `[query]`.
    pub fn query(mut self, lines: &str) -> LakeToml {
        let _ = writeln!(self.query, "{lines}");
        self
    }

    /// `read_tokens` under `[query]`.
    pub fn read_tokens(self, tokens: &[&str]) -> LakeToml {
        let list: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
        self.query(&format!("read_tokens = [{}]", list.join(", ")))
    }

    /// Any other sections (or `[ingest]`/`[query]`-free text), appended verbatim.
    pub fn section(mut self, text: &str) -> LakeToml {
        let _ = write!(self.sections, "\n{text}\n");
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "version = 1\ndata_dir = \"{}\"\nlisten = \"{}\"\n{}",
            self.dir.join("data").display(),
            self.listen,
            self.nodes
        );
        if !self.ingest.is_empty() {
            let _ = write!(text, "\n[ingest]\n{}", self.ingest);
        }
        if !self.query.is_empty() {
            let _ = write!(text, "\n[query]\n{}", self.query);
        }
        text.push_str(&self.sections);
        text
    }

    /// Writes `<dir>/lake.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("lake.toml");
        std::fs::write(&path, self.render()).unwrap();
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_and_query_are_declared_once_before_the_other_sections() {
        let text = LakeToml::new(Path::new("/d"), 7)
            .node("a", "ta")
            .node_with("b", "token_sha256 = \"00\"")
            .flush("1s")
            .read_tokens(&["r1", "r2"])
            .query("timeout = \"2s\"")
            .section("[archive]\nstore = \"fs\"")
            .ingest("max_days = 2")
            .render();
        assert_eq!(
            text,
            "version = 1\ndata_dir = \"/d/data\"\nlisten = \"127.0.0.1:7\"\n\n[[nodes]]\nname = \"a\"\ntoken = \"ta\"\n\n\
             [[nodes]]\nname = \"b\"\ntoken_sha256 = \"00\"\n\n[ingest]\nflush_interval = \"1s\"\nmax_days = 2\n\n\
             [query]\nread_tokens = [\"r1\", \"r2\"]\ntimeout = \"2s\"\n\n[archive]\nstore = \"fs\"\n"
        );
    }
}
