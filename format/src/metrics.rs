//! Self-telemetry declared where it is counted. A struct of [`Metric`]s is declared with
//! [`metrics!`](crate::metrics!): each field carries its exported name, its kind and its
//! help (the field's doc comment), and the macro derives the one list a renderer walks
//! ([`Metric`]s in declaration order) from the same declaration, so a counter cannot be
//! added without being exported, nor exported under a name that differs from its docs.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a value only grows or is overwritten by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (Prometheus `counter`; names end in `_total`).
    Counter,
    /// Overwritten with the current value (Prometheus `gauge`).
    Gauge,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// What a metric is: exported name, help text, kind.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// The exported name, e.g. `lake_collector_shipped_batches_total`.
    pub name: &'static str,
    /// The help text, as the declaration's doc comment wrote it.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
}

impl Desc {
    /// The help on one line, without the doc comment's leading spaces.
    pub fn help(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// One value and its description. It dereferences to its `AtomicU64`, so code that counts
/// with atomics (`fetch_add`, `load`) keeps doing so.
#[derive(Debug)]
pub struct Metric {
    desc: Desc,
    value: AtomicU64,
}

impl Metric {
    /// A metric at zero.
    pub const fn new(desc: Desc) -> Metric {
        Metric { desc, value: AtomicU64::new(0) }
    }

    /// Its name, help and kind.
    pub fn desc(&self) -> &Desc {
        &self.desc
    }

    /// Adds `n` (counters).
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the value (gauges).
    pub fn set(&self, v: u64) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Deref for Metric {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.value
    }
}

/// Declares a struct whose fields are [`Metric`](crate::metrics::Metric)s, each written
/// `/// help` then `field: Counter("exported_name"),` (or `Gauge(…)`), and after the
/// struct, optionally, `also { field: Type, … }` for fields that are not metrics (they
/// start at `Default::default()`). Generates the struct, its `Default`, and
/// `metrics(&self)`: every metric in declaration order, the list a renderer walks.
#[macro_export]
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $fvis:vis $field:ident : $kind:ident ( $metric:literal ),
            )*
        }
        $( also { $( $(#[$xmeta:meta])* $xvis:vis $xfield:ident : $xty:ty ),* $(,)? } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name {
            $( $(#[doc = $doc])* $fvis $field: $crate::metrics::Metric, )*
            $( $( $(#[$xmeta])* $xvis $xfield: $xty, )* )?
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self {
                    $(
                        $field: $crate::metrics::Metric::new($crate::metrics::Desc {
                            name: $metric,
                            help: concat!($($doc),*),
                            kind: $crate::metrics::Kind::$kind,
                        }),
                    )*
                    $( $( $xfield: ::std::default::Default::default(), )* )?
                }
            }
        }

        impl $name {
            /// Every metric of the struct, in declaration order.
            $vis fn metrics(&self) -> ::std::vec::Vec<&$crate::metrics::Metric> {
                ::std::vec![$(&self.$field),*]
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    crate::metrics! {
        /// Two of each.
        struct Demo {
            /// Things done,
            /// counted once each.
            done: Counter("demo_done_total"),
            /// Things waiting.
            waiting: Gauge("demo_waiting"),
        }
        also { note: String }
    }

    #[test]
    fn every_declared_metric_is_listed_with_its_help() {
        let d = Demo::default();
        d.done.add(2);
        d.done.fetch_add(1, Ordering::Relaxed);
        d.waiting.set(7);
        let got: Vec<_> =
            d.metrics().iter().map(|m| (m.desc().name, m.desc().help(), m.desc().kind.as_str(), m.get())).collect();
        assert_eq!(
            got,
            vec![
                ("demo_done_total", "Things done, counted once each.".to_string(), "counter", 3),
                ("demo_waiting", "Things waiting.".to_string(), "gauge", 7),
            ]
        );
        assert!(d.note.is_empty());
    }
}
