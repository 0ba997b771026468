//! What a read may call: the allow-list every statement's syntax tree is walked against.
//!
//! A statement that DuckDB parses as a SELECT can still change the engine for every later
//! query: `SELECT * FROM enable_logging(storage = 'file', storage_path = '/nonexistent')`
//! made every later statement on every connection fail, and aborted the lake when a
//! connection closed; `checkpoint()`, `enable_profiling()`, `truncate_duckdb_logs()` and
//! `current_setting(…)` were plain SELECTs too. So the check is not "is it a SELECT" but
//! "does it only call what a read needs": [`check`] walks the whole tree that
//! `json_serialize_sql` returns (CTEs, subqueries, set operations, joins, window, ORDER
//! BY, QUALIFY and LIMIT clauses, lambdas, `DESCRIBE`/`SUMMARIZE` bodies, the statement
//! under `EXPLAIN`) and refuses, naming it, anything not on these lists:
//!
//! - **Scalar, aggregate and window functions**: derived once per engine from
//!   `duckdb_functions()` ([`AllowList::derive`]): DuckDB's built-in scalar and aggregate
//!   functions (window functions are aggregates there) without side effects, plus
//!   `unnest`/`unlist` in a select list, `error`, `random` and the `uuid` functions — minus
//!   [`EXCLUDED`]: functions that read or change the engine's settings or session state
//!   (`current_setting`, `getvariable`, `current_database`, `version`, …), sequences and the
//!   random seed (`nextval`, `currval`, `setseed`), DuckDB's log (`write_log`), SQL handed
//!   over as text (`json_serialize_sql`, `json_serialize_plan`, …), aggregate-state
//!   internals and `__internal_*`. Built-in macros (`date_add`, `list_sum`, `nullif`, …)
//!   are allowed when their own definition passes this check (so `get_block_size`, which
//!   reads `pragma_database_size()`, does not); `pg_catalog`'s are not. DuckDB has no
//!   scalar function that reads a file or URL: table functions do that.
//! - **Table functions** ([`TABLE_FUNCTIONS`]): `range`, `generate_series`, `unnest`,
//!   `json_each`, `json_tree`; `read_parquet` (`parquet_scan`), `parquet_metadata` and
//!   `parquet_schema`, which the sandbox's `allowed_directories` holds to `<data>/tables/`
//!   (reading the lake's own files by path, as before); and the catalog listings
//!   `duckdb_tables()`, `duckdb_views()`, `duckdb_columns()`. Not `query()` or
//!   `query_table()`: their SQL is a string the check would have to trust.
//! - **Tables**: the lake's own (the catalog tables, `events`, custom tables), unqualified
//!   or in `main`/`temp`; the statement's CTEs where they are in scope (a CTE named like a
//!   system view is only that CTE inside its `WITH`); `information_schema.tables` and
//!   `.columns` and the `duckdb_tables`/`duckdb_views`/`duckdb_columns` views. The TEMP
//!   `__fresh_*` tables behind the views hold nothing a view does not show; they are not
//!   on the list, so naming them is refused like any other unknown table.
//! - **`SHOW`**: `SHOW TABLES` and `SHOW ALL TABLES`; `DESCRIBE` and `SUMMARIZE` of
//!   anything allowed.
//!
//! Fail closed: a node kind the walk does not know (a syntax newer than this check), a
//! function or table not on a list, a schema-qualified call into `pg_catalog`: refused. A
//! refused function DuckDB knows is [`EngineError::Forbidden`] (a 403: `function
//! enable_logging is not allowed: …`); a name DuckDB does not know at all is refused too,
//! as the 400 DuckDB itself would give (`Catalog Error: … does not exist!`), since it is a
//! mistake rather than an attempt. Every statement is parsed by DuckDB and walked here,
//! once per SQL text: the engine keeps the verdict per exact text (`CheckCache` in the
//! engine; not for text that names a custom table, which can appear later). Reading and walking the tree of a typical
//! dashboard query (5 KB of JSON) takes about 15 µs optimised (0.4 ms in a debug build),
//! beside the 0.3–0.8 ms of `json_serialize_sql` itself, which the check ran before the
//! allow-list too (`check_and_probe_cost_is_small` in the engine tests prints both).
//!
//! The tree is a [`Tree`] and the walk keeps its own stack, so a statement nested as deep
//! as DuckDB's parser allows costs memory, not thread stack.

use std::collections::HashSet;

use duckdb::Connection;
use lake_format::Table;

use super::sandbox::FILES_FORBIDDEN;
use super::tree::{Node, Tree};
use super::{EngineError, Result};

/// Table functions a read may call.
pub(super) const TABLE_FUNCTIONS: [&str; 12] = [
    "range",
    "generate_series",
    "unnest",
    "json_each",
    "json_tree",
    "read_parquet",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "duckdb_tables",
    "duckdb_views",
    "duckdb_columns",
];

/// Functions DuckDB lists as free of side effects that a read may still not call, with why.
pub(super) const EXCLUDED: [(&str, &str); 20] = [
    ("current_setting", STATE),
    ("getvariable", STATE),
    ("current_database", STATE),
    ("current_catalog", STATE),
    ("current_schema", STATE),
    ("current_schemas", STATE),
    ("in_search_path", STATE),
    ("txid_current", STATE),
    ("version", STATE),
    ("nextval", CHANGES),
    ("currval", STATE),
    ("setseed", CHANGES),
    ("write_log", LOG),
    ("parse_duckdb_log_message", LOG),
    ("json_serialize_sql", DYNAMIC),
    ("json_deserialize_sql", DYNAMIC),
    ("json_serialize_plan", DYNAMIC),
    ("finalize", INTERNAL),
    ("combine", INTERNAL),
    ("sleep_ms", "it only holds a connection"),
];

/// Functions DuckDB marks as having side effects that are harmless in a read: their
/// "effect" is a fresh random value or an error for the query that calls them.
const HARMLESS_VOLATILE: [&str; 6] = ["random", "gen_random_uuid", "uuid", "uuidv4", "uuidv7", "error"];

/// Names the binder handles itself (`unnest` in a select list) rather than the catalog.
const BINDER_FUNCTIONS: [&str; 2] = ["unnest", "unlist"];

/// System views a read may use, unqualified or in `main`.
const CATALOG_VIEWS: [&str; 3] = ["duckdb_tables", "duckdb_views", "duckdb_columns"];
/// Views of `information_schema` a read may use.
const INFORMATION_SCHEMA: [&str; 2] = ["tables", "columns"];
/// What `SHOW` may list (`SHOW TABLES`, `SHOW ALL TABLES`).
const SHOW_LISTS: [&str; 2] = ["tables", "__show_tables_expanded"];

const STATE: &str = "it reads the engine's settings or session state";
const CHANGES: &str = "it changes the engine's state for later queries";
const LOG: &str = "it reads or writes DuckDB's own log";
const DYNAMIC: &str = "it parses or runs SQL given as text, which this check cannot see";
const INTERNAL: &str = "it works on DuckDB's internal aggregate states";
const SEE: &str = "see \"What a read may call\" in the README";

/// The functions a read may call, and the names DuckDB knows, to word a refusal.
#[derive(Debug)]
pub(super) struct AllowList {
    /// Scalar, aggregate and window functions and macros a read may call, lower-case.
    functions: HashSet<String>,
    /// Every function name DuckDB knows, of any kind: a refused name not in it is a
    /// mistake (400), one in it an attempt (403).
    known_functions: HashSet<String>,
    /// DuckDB's own views and tables (`duckdb_settings`, `pg_catalog.*`, …), likewise.
    known_tables: HashSet<String>,
}

impl AllowList {
    /// The allow-list of the library the engine runs on, read from a fresh database's
    /// `duckdb_functions()` (see the module docs for the rule).
    pub(super) fn derive(conn: &Connection) -> Result<AllowList> {
        let internal = |e: duckdb::Error| EngineError::Internal(format!("listing DuckDB's functions: {e}"));
        let mut known_functions = HashSet::new();
        let mut functions = HashSet::new();
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT lower(function_name), function_type, coalesce(has_side_effects, false), schema_name
                 FROM duckdb_functions() WHERE database_name = 'system'",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(internal)?;
        for row in rows {
            let (name, kind, side_effects, schema) = row.map_err(internal)?;
            let computes = matches!(kind.as_str(), "scalar" | "aggregate") && schema == "main";
            if computes
                && (!side_effects || HARMLESS_VOLATILE.contains(&name.as_str()))
                && !EXCLUDED.iter().any(|(n, _)| *n == name)
                && !name.starts_with("__internal")
            {
                functions.insert(name.clone());
            }
            known_functions.insert(name);
        }
        functions.extend(BINDER_FUNCTIONS.iter().map(|s| s.to_string()));

        let mut known_tables = HashSet::new();
        let mut stmt = conn
            .prepare("SELECT lower(view_name) FROM duckdb_views() UNION SELECT lower(table_name) FROM duckdb_tables()")
            .map_err(internal)?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0)).map_err(internal)? {
            known_tables.insert(name.map_err(internal)?);
        }

        let mut allow = AllowList { functions, known_functions, known_tables };
        allow.add_macros(conn)?;
        Ok(allow)
    }

    /// Adds the built-in macros (of `main`) whose every definition passes the check with
    /// the functions allowed so far, until no more do: a macro may use another.
    fn add_macros(&mut self, conn: &Connection) -> Result<()> {
        let internal = |e: duckdb::Error| EngineError::Internal(format!("listing DuckDB's macros: {e}"));
        let mut stmt = conn
            .prepare(
                "SELECT lower(function_name), json_serialize_sql('SELECT ' || macro_definition)
                 FROM duckdb_functions()
                 WHERE database_name = 'system' AND schema_name = 'main' AND function_type = 'macro'",
            )
            .map_err(internal)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(internal)?;
        // A name may have several definitions (overloads): all must pass.
        let mut pending: Vec<(String, Vec<String>)> = Vec::new();
        for row in rows {
            let (name, body) = row.map_err(internal)?;
            if EXCLUDED.iter().any(|(n, _)| *n == name) {
                continue;
            }
            match pending.iter_mut().find(|(n, _)| *n == name) {
                Some((_, bodies)) => bodies.push(body),
                None => pending.push((name, vec![body])),
            }
        }
        let no_tables = |_: &str| false;
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for (name, bodies) in pending {
                let passes = bodies.iter().all(|body| match Tree::parse(body) {
                    Ok(tree) => statement(&tree).and_then(|root| check(&tree, root, self, &no_tables)).is_ok(),
                    Err(_) => false,
                });
                if passes {
                    self.functions.insert(name);
                } else {
                    still.push((name, bodies));
                }
            }
            pending = still;
            if pending.len() == before {
                return Ok(());
            }
        }
    }

    /// Whether a read may call the scalar, aggregate or window function `name` (lower-case).
    #[cfg(test)]
    pub(super) fn allows(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// The refusal of a call to `name` (lower-case), a table function when `table`.
    fn refuse_function(&self, name: &str, table: bool) -> EngineError {
        if !self.known_functions.contains(name) {
            let kind = if table { "Table Function" } else { "Scalar Function" };
            return EngineError::Sql(format!("Catalog Error: {kind} with name {name} does not exist!"));
        }
        EngineError::Forbidden(format!("function {name} is not allowed: {}", reason(name, table)))
    }
}

/// Why a function DuckDB knows is refused.
fn reason(name: &str, table: bool) -> String {
    if let Some((_, why)) = EXCLUDED.iter().find(|(n, _)| *n == name) {
        return format!("{why}; {SEE}");
    }
    let why = match name {
        "query" | "query_table" | "json_execute_serialized_sql" | "sql_auto_complete" | "check_peg_parser" => DYNAMIC,
        "checkpoint" | "force_checkpoint" | "truncate_duckdb_logs" => CHANGES,
        n if n.starts_with("enable_") || n.starts_with("disable_") => CHANGES,
        n if n.starts_with("read_")
            || n.ends_with("_scan")
            || n.starts_with("parquet_")
            || n == "glob"
            || n == "sniff_csv" =>
        {
            return "queries may only read the lake's own tables (no files outside <data>/tables/, no URLs); \
                    read_parquet, parquet_metadata and parquet_schema may read its files"
                .to_string();
        }
        n if n.starts_with("duckdb_")
            || n.starts_with("pragma_")
            || n.starts_with("current_")
            || n == "which_secret" =>
        {
            STATE
        }
        _ if table => return format!("a read may only call the table functions {}; {SEE}", TABLE_FUNCTIONS.join(", ")),
        _ => "it is not one of the functions a read may call",
    };
    format!("{why}; {SEE}")
}

/// The root of the one statement in `json_serialize_sql`'s answer, or why there is none.
/// A statement DuckDB does not serialise (anything but a SELECT) or more than one is the
/// caller's to word: this only reads macro definitions, which are one expression.
fn statement(tree: &Tree<'_>) -> Result<usize> {
    if tree.bool(0, "error") != Some(false) {
        return Err(EngineError::Sql("not a single SELECT".into()));
    }
    match tree.get(0, "statements").map(|s| tree.node(s)) {
        Some(Node::Array(s)) if s.len() == 1 => Ok(s[0]),
        _ => Err(EngineError::Sql("not a single SELECT".into())),
    }
}

/// What the walk has left to do, innermost last.
enum Work {
    /// Check a node and queue its children.
    Visit(usize),
    /// A CTE name comes into scope.
    Scope(String),
    /// CTEs of a query node go out of scope: keep the first `n` names.
    Unscope(usize),
}

/// Checks the statement at `root` of `tree` against `allow`; `lake` says whether a table
/// name (lower-case) is one of the lake's.
pub(super) fn check(tree: &Tree<'_>, root: usize, allow: &AllowList, lake: &dyn Fn(&str) -> bool) -> Result<()> {
    let mut walk = Walk { tree, allow, lake, scope: Vec::new(), todo: vec![Work::Visit(root)] };
    while let Some(work) = walk.todo.pop() {
        match work {
            Work::Visit(i) => walk.visit(i)?,
            Work::Scope(name) => walk.scope.push(name),
            Work::Unscope(n) => walk.scope.truncate(n),
        }
    }
    Ok(())
}

struct Walk<'w, 'a> {
    tree: &'w Tree<'a>,
    allow: &'w AllowList,
    lake: &'w dyn Fn(&str) -> bool,
    /// CTE names in scope, lower-case.
    scope: Vec<String>,
    todo: Vec<Work>,
}

/// An answer that does not have the shape DuckDB's serialiser gives: refused.
fn malformed(what: &str) -> EngineError {
    EngineError::Forbidden(format!(
        "this statement is not allowed: its syntax tree has {what} the read check does not know"
    ))
}

fn unknown_kind(kind: &str) -> EngineError {
    EngineError::Forbidden(format!("{kind} is not allowed: the read check does not know this syntax; {SEE}"))
}

impl Walk<'_, '_> {
    fn visit(&mut self, i: usize) -> Result<()> {
        match self.tree.node(i) {
            Node::Scalar | Node::Bool(_) | Node::Str(_) => Ok(()),
            Node::Array(items) => {
                self.todo.extend(items.iter().rev().map(|&c| Work::Visit(c)));
                Ok(())
            }
            Node::Object(_) => self.object(i),
        }
    }

    /// Queues every field of object `i` but those in `skip`, in document order.
    fn fields(&mut self, i: usize, skip: &[&str]) {
        if let Node::Object(fields) = self.tree.node(i) {
            self.todo
                .extend(fields.iter().rev().filter(|(k, _)| !skip.contains(&k.as_ref())).map(|(_, v)| Work::Visit(*v)));
        }
    }

    fn object(&mut self, i: usize) -> Result<()> {
        let t = self.tree;
        // Expressions carry a class; table references, query nodes, modifiers and ORDER BY
        // entries a string type; logical types and constant values are data.
        if let Some(class) = t.get(i, "class") {
            let Node::Str(class) = t.node(class) else { return Err(malformed("a class that is not a string")) };
            return self.expression(class, i);
        }
        let is_type = t.str(i, "id").is_some() && t.get(i, "type_info").is_some();
        let is_value =
            t.get(i, "is_null").is_some() && t.get(i, "type").is_some_and(|ty| matches!(t.node(ty), Node::Object(_)));
        if is_type || is_value {
            return Ok(());
        }
        match t.get(i, "type").map(|ty| t.node(ty)) {
            Some(Node::Str(kind)) => self.node(kind, i),
            Some(_) => Err(malformed("a type that is not a string")),
            None => {
                // A plain container (a statement, a CASE arm, a CTE entry's value, …).
                self.fields(i, &[]);
                Ok(())
            }
        }
    }

    fn expression(&mut self, class: &str, i: usize) -> Result<()> {
        match class {
            // A value: nothing to call.
            "CONSTANT" => return Ok(()),
            "FUNCTION" => {
                self.function(i)?;
                if self.tree.bool(i, "export_state") == Some(true) {
                    return Err(EngineError::Forbidden(format!("EXPORT_STATE is not allowed: {INTERNAL}")));
                }
            }
            "WINDOW" => self.function(i)?,
            "BETWEEN"
            | "CASE"
            | "CAST"
            | "COLLATE"
            | "COLUMN_REF"
            | "COMPARISON"
            | "CONJUNCTION"
            | "LAMBDA"
            | "OPERATOR"
            | "PARAMETER"
            | "POSITIONAL_REFERENCE"
            | "STAR"
            | "SUBQUERY" => {}
            other => return Err(unknown_kind(&format!("a {other} expression"))),
        }
        self.fields(i, &[]);
        Ok(())
    }

    fn node(&mut self, kind: &str, i: usize) -> Result<()> {
        match kind {
            "SELECT_NODE" | "SET_OPERATION_NODE" => self.query_node(i, None),
            "RECURSIVE_CTE_NODE" => {
                let name = self.tree.str(i, "cte_name").ok_or_else(|| malformed("a recursive CTE without a name"))?;
                self.query_node(i, Some(name.to_lowercase()))
            }
            "BASE_TABLE" => {
                self.base_table(i)?;
                self.fields(i, &[]);
                Ok(())
            }
            "TABLE_FUNCTION" => self.table_function(i),
            "SHOW_REF" => self.show(i),
            "JOIN" | "SUBQUERY" | "EXPRESSION_LIST" | "PIVOT" | "EMPTY"
            | "ORDER_MODIFIER" | "LIMIT_MODIFIER" | "LIMIT_PERCENT_MODIFIER" | "DISTINCT_MODIFIER"
            // ORDER BY entries
            | "ORDER_DEFAULT" | "ASCENDING" | "DESCENDING" => {
                self.fields(i, &[]);
                Ok(())
            }
            other => Err(unknown_kind(other)),
        }
    }

    /// A query node: each CTE's body sees the CTEs before it (and a recursive CTE itself);
    /// the rest of the node sees them all; nothing outside the node does.
    fn query_node(&mut self, i: usize, recursive: Option<String>) -> Result<()> {
        let t = self.tree;
        let mut run = Vec::new();
        if let Some(name) = recursive {
            run.push(Work::Scope(name));
        }
        if let Some(ctes) = t.get(i, "cte_map") {
            let Node::Object(fields) = t.node(ctes) else { return Err(malformed("a CTE map that is not an object")) };
            for (key, value) in fields {
                if key != "map" {
                    run.push(Work::Visit(*value));
                    continue;
                }
                let Node::Array(entries) = t.node(*value) else {
                    return Err(malformed("a CTE list that is not a list"));
                };
                for &entry in entries {
                    let Node::Object(parts) = t.node(entry) else {
                        return Err(malformed("a CTE that is not an object"));
                    };
                    let name = t.str(entry, "key").ok_or_else(|| malformed("a CTE without a name"))?;
                    run.extend(parts.iter().filter(|(k, _)| k != "key").map(|(_, v)| Work::Visit(*v)));
                    run.push(Work::Scope(name.to_lowercase()));
                }
            }
        }
        if let Node::Object(fields) = t.node(i) {
            run.extend(fields.iter().filter(|(k, _)| k != "cte_map").map(|(_, v)| Work::Visit(*v)));
        }
        run.push(Work::Unscope(self.scope.len()));
        self.todo.extend(run.into_iter().rev());
        Ok(())
    }

    fn base_table(&self, i: usize) -> Result<()> {
        let t = self.tree;
        let table = t.str(i, "table_name").ok_or_else(|| malformed("a table without a name"))?;
        let catalog = t.str(i, "catalog_name").unwrap_or("").to_lowercase();
        let schema = t.str(i, "schema_name").unwrap_or("").to_lowercase();
        let name = table.to_lowercase();
        let (catalog, schema) = (catalog.as_str(), schema.as_str());
        if catalog.is_empty() && schema.is_empty() && self.scope.contains(&name) {
            return Ok(());
        }
        let lake_place = matches!((catalog, schema), ("", "" | "main" | "temp") | ("temp", "" | "main"));
        if lake_place && (self.lake)(&name) {
            return Ok(());
        }
        let system = matches!(catalog, "" | "system");
        if system && matches!(schema, "" | "main") && CATALOG_VIEWS.contains(&name.as_str()) {
            return Ok(());
        }
        if system && schema == "information_schema" && INFORMATION_SCHEMA.contains(&name.as_str()) {
            return Ok(());
        }
        let shown = [catalog, schema, table].iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(".");
        if table.contains(['/', '\\', ':', '.', '*']) {
            // A path or URL: DuckDB would scan it as a file.
            return Err(EngineError::Forbidden(format!("table '{table}' is {FILES_FORBIDDEN}")));
        }
        if self.allow.known_tables.contains(&name) || !lake_place {
            return Err(EngineError::Forbidden(format!("table {shown} is not allowed: {}", tables_rule())));
        }
        Err(EngineError::Sql(format!("Catalog Error: Table with name {table} does not exist! {}", tables_rule())))
    }

    fn table_function(&mut self, i: usize) -> Result<()> {
        let t = self.tree;
        let f = t.get(i, "function").ok_or_else(|| malformed("a table function without a call"))?;
        if t.str(f, "class") != Some("FUNCTION") {
            return Err(malformed("a table function that is not a call"));
        }
        let name = t.str(f, "function_name").ok_or_else(|| malformed("a call without a name"))?.to_lowercase();
        let catalog = t.str(f, "catalog").unwrap_or("").to_lowercase();
        let schema = t.str(f, "schema").unwrap_or("").to_lowercase();
        if !matches!(catalog.as_str(), "" | "system") || !matches!(schema.as_str(), "" | "main") {
            return Err(EngineError::Forbidden(format!(
                "function {}.{name} is not allowed: call the table functions a read may use unqualified; {SEE}",
                [catalog.as_str(), schema.as_str()]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(".")
            )));
        }
        if !TABLE_FUNCTIONS.contains(&name.as_str()) {
            return Err(self.allow.refuse_function(&name, true));
        }
        // Its arguments, then the rest of the reference (alias, sample, …).
        self.fields(i, &["function"]);
        self.fields(f, &[]);
        Ok(())
    }

    /// A scalar, aggregate or window call.
    fn function(&self, i: usize) -> Result<()> {
        let t = self.tree;
        let name = t.str(i, "function_name").ok_or_else(|| malformed("a call without a name"))?.to_lowercase();
        let catalog = t.str(i, "catalog").unwrap_or("").to_lowercase();
        let schema = t.str(i, "schema").unwrap_or("").to_lowercase();
        // `x.upper()` puts the column `x` where a schema goes, so only the schemas that
        // hold other functions are refused: `pg_catalog` (and any other catalog).
        if !matches!(catalog.as_str(), "" | "system") || matches!(schema.as_str(), "pg_catalog" | "information_schema")
        {
            return Err(EngineError::Forbidden(format!(
                "function {}.{name} is not allowed: {}'s functions are not on the list a read may call; {SEE}",
                [catalog.as_str(), schema.as_str()]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("."),
                if catalog.is_empty() || catalog == "system" { schema.as_str() } else { catalog.as_str() },
            )));
        }
        if self.allow.functions.contains(&name) {
            return Ok(());
        }
        Err(self.allow.refuse_function(&name, false))
    }

    fn show(&mut self, i: usize) -> Result<()> {
        let t = self.tree;
        let kind = t.str(i, "show_type").ok_or_else(|| malformed("a SHOW without a kind"))?;
        let table = t.str(i, "table_name").unwrap_or("");
        let unqualified =
            t.str(i, "catalog_name").unwrap_or("").is_empty() && t.str(i, "schema_name").unwrap_or("").is_empty();
        let allowed = match kind {
            // `DESCRIBE <query>` / `SUMMARIZE <query>`: the query is walked like any.
            "DESCRIBE" | "SUMMARY" => table.is_empty() && unqualified,
            "SHOW_UNQUALIFIED" => {
                let list = table.trim_matches('"').to_lowercase();
                SHOW_LISTS.contains(&list.as_str())
                    && unqualified
                    && t.get(i, "query").is_none_or(|q| matches!(t.node(q), Node::Scalar))
            }
            _ => false,
        };
        if !allowed {
            let what = if table.is_empty() { kind.to_string() } else { table.trim_matches('"').to_string() };
            return Err(EngineError::Forbidden(format!(
                "SHOW {what} is not allowed: a read may SHOW TABLES (or ALL TABLES) and DESCRIBE or SUMMARIZE a table or query; {SEE}"
            )));
        }
        self.fields(i, &[]);
        Ok(())
    }
}

/// The tables a read may use, for refusals.
fn tables_rule() -> String {
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    format!(
        "a read may use the lake's tables ({}), the events view and custom tables, its own CTEs, \
         information_schema.tables and .columns, and duckdb_tables, duckdb_views and duckdb_columns",
        names.join(", ")
    )
}
