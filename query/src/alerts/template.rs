//! The message template of a rule: text with `{{ … }}` placeholders, parsed once at load.
//!
//! A placeholder is a variable and optional filters: `{{ labels.host }}`,
//! `{{ value | percent }}`, `{{ details.error }}`.
//!
//! Variables: `value`, `rule`, `severity`, `labels.<column>`, `details.<column>` (the
//! query's `_`-prefixed columns, without the `_`). A label or detail the query did not
//! return renders as `?`.
//!
//! Filters: `percent` (0.061 → `6.1%`), `round` (no decimals), `duration` (seconds →
//! `3m 20s`), `days` (→ `4.2 days`). Unknown variables and filters are load errors.

use std::fmt;

use super::{format_duration_secs, format_value, Labels};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr { var: Var, filters: Vec<Filter> },
}

#[derive(Debug, Clone, PartialEq)]
enum Var {
    Value,
    Rule,
    Severity,
    Label(String),
    Detail(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    Percent,
    Round,
    Duration,
    Days,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// What a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Severity name.
    pub severity: &'a str,
    /// The instance's value, if known.
    pub value: Option<f64>,
    /// Identity labels.
    pub labels: &'a Labels,
    /// Detail columns.
    pub details: &'a Labels,
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError(format!("unclosed {{{{ at byte {}", source.len() - rest.len() + start)))?;
            parts.push(parse_expr(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(TemplateError("}} without an opening {{".into()));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { source: source.to_string(), parts })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template.
    pub fn render(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr { var, filters } => out.push_str(&eval(var, filters, cx)),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_expr(expr: &str) -> Result<Part, TemplateError> {
    let mut pieces = expr.split('|').map(str::trim);
    let name = pieces.next().unwrap_or_default();
    let var = match name {
        "value" => Var::Value,
        "rule" => Var::Rule,
        "severity" => Var::Severity,
        _ => match name.split_once('.') {
            Some(("labels", l)) if valid_ident(l) => Var::Label(l.to_string()),
            Some(("details", d)) if valid_ident(d) => Var::Detail(d.to_string()),
            _ => {
                return Err(TemplateError(format!(
                    "unknown variable {name:?} in {{{{ {expr} }}}} (use value, rule, severity, labels.<column> or details.<column>)"
                )))
            }
        },
    };
    let filters = pieces
        .map(|f| match f {
            "percent" => Ok(Filter::Percent),
            "round" => Ok(Filter::Round),
            "duration" => Ok(Filter::Duration),
            "days" => Ok(Filter::Days),
            other => Err(TemplateError(format!(
                "unknown filter {other:?} in {{{{ {expr} }}}} (use percent, round, duration or days)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Part::Expr { var, filters })
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn eval(var: &Var, filters: &[Filter], cx: &Context<'_>) -> String {
    let text = match var {
        Var::Value => match cx.value {
            Some(v) => Value::Num(v),
            None => Value::Text("?".into()),
        },
        Var::Rule => Value::Text(cx.rule.to_string()),
        Var::Severity => Value::Text(cx.severity.to_string()),
        Var::Label(l) => Value::of(cx.labels.get(l)),
        Var::Detail(d) => Value::of(cx.details.get(d)),
    };
    filters.iter().fold(text, |v, f| v.apply(*f)).into_string()
}

enum Value {
    Num(f64),
    Text(String),
}

impl Value {
    fn of(s: Option<&String>) -> Value {
        match s {
            // Numbers in label columns (e.g. a count cast to text) still take numeric filters.
            Some(s) => s.parse::<f64>().map(Value::Num).unwrap_or_else(|_| Value::Text(s.clone())),
            None => Value::Text("?".into()),
        }
    }

    fn apply(self, f: Filter) -> Value {
        let Value::Num(v) = self else { return self };
        Value::Text(match f {
            Filter::Percent => {
                let p = format!("{:.1}", v * 100.0);
                format!("{}%", p.trim_end_matches(".0"))
            }
            Filter::Round => format!("{}", v.round() as i64),
            Filter::Duration => format_duration_secs(v),
            Filter::Days => format!("{:.1} days", v),
        })
    }

    fn into_string(self) -> String {
        match self {
            Value::Num(v) => format_value(v),
            Value::Text(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx<'a>(labels: &'a Labels, details: &'a Labels, value: Option<f64>) -> Context<'a> {
        Context { rule: "r", severity: "warning", value, labels, details }
    }

    #[test]
    fn renders_variables_and_filters() {
        let labels = Labels::from([("vhost".to_string(), "shop.example".to_string())]);
        let details = Labels::from([("requests".to_string(), "412".to_string())]);
        let t = Template::parse("{{labels.vhost}}: 5xx {{ value | percent }} of {{ details.requests }} ({{ rule }}/{{severity}}) {{ labels.nope }}").unwrap();
        assert_eq!(t.render(&cx(&labels, &details, Some(0.0612))), "shop.example: 5xx 6.1% of 412 (r/warning) ?");
        let t = Template::parse("silent for {{ value | duration }}, {{ value | round }}, {{ value | days }}").unwrap();
        assert_eq!(t.render(&cx(&labels, &details, Some(200.4))), "silent for 3m 20s, 200, 200.4 days");
        assert_eq!(Template::parse("{{ value }}").unwrap().render(&cx(&labels, &details, None)), "?");
        assert_eq!(Template::parse("no placeholders").unwrap().render(&cx(&labels, &details, None)), "no placeholders");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, says) in [
            ("{{ valu }}", "unknown variable \"valu\""),
            ("{{ value | pct }}", "unknown filter \"pct\""),
            ("{{ labels. }}", "unknown variable"),
            ("x {{ value", "unclosed"),
            ("x }} y", "without an opening"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
