//! Self-telemetry declared where it is counted. A struct of [`Metric`]s is declared with
//! [`metrics!`](crate::metrics!): each field carries its exported name, its kind and its
//! help (the field's doc comment), and the macro derives the one list a renderer walks
//! ([`Metric`]s in declaration order) from the same declaration, so a counter cannot be
//! added without being exported, nor exported under a name that differs from its docs.
//!
//! Values an owner does not store but reads when asked (buffered rows, open connections,
//! a configured limit) are declared on the owner's own type with the macro's `impl` form:
//! name, kind, help and the expression that reads the value, side by side. Both forms give
//! `samples(&self)`, the values as exported, and [`write_prometheus`] is the one writer
//! of the Prometheus text format.

use std::fmt::Write as _;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Its description and current value.
    pub fn sample(&self) -> Sample {
        Sample { desc: self.desc, value: self.get() }
    }
}

/// One value as exported: what it is and what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Name, help and kind.
    pub desc: Desc,
    /// The value when it was read.
    pub value: u64,
}

impl Sample {
    /// Appends it to `out` in the Prometheus text format ([`write_prometheus`]).
    pub fn write_prometheus(&self, out: &mut String) {
        write_prometheus(out, self.desc.name, &self.desc.help(), self.desc.kind, self.value);
    }
}

/// Appends one metric to `out` in the Prometheus text format (0.0.4): its `# HELP` and
/// `# TYPE` lines and its value. The one place that format is written, also for metrics
/// whose names are made at run time.
pub fn write_prometheus(out: &mut String, name: &str, help: &str, kind: Kind, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}", kind = kind.as_str());
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
/// start at `Default::default()`). Generates the struct, its `Default`,
/// `metrics(&self)`: every metric in declaration order, the list a renderer walks, and
/// `samples(&self)`: their [`Sample`](crate::metrics::Sample)s.
///
/// The `impl` form declares values read at scrape time on an existing type:
/// `impl Type as t { /// help \n Gauge("exported_name") = t.len() as u64, … }` generates
/// `samples(&self)`, the expressions evaluated with `t` bound to `self`, in order.
#[macro_export]
macro_rules! metrics {
    (
        $vis:vis impl $ty:ty as $this:ident {
            $(
                $(#[doc = $doc:literal])*
                $kind:ident ( $metric:literal ) = $value:expr,
            )*
        }
    ) => {
        impl $ty {
            /// The values declared for export, read now, in declaration order.
            $vis fn samples(&self) -> ::std::vec::Vec<$crate::metrics::Sample> {
                let $this = self;
                ::std::vec![$(
                    $crate::metrics::Sample {
                        desc: $crate::metrics::Desc {
                            name: $metric,
                            help: concat!($($doc),*),
                            kind: $crate::metrics::Kind::$kind,
                        },
                        value: $value,
                    }
                ),*]
            }
        }
    };
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

            /// Every metric's description and current value, in declaration order.
            // Not every owner exports text (the collector ships rows from `metrics()`).
            #[allow(dead_code)]
            $vis fn samples(&self) -> ::std::vec::Vec<$crate::metrics::Sample> {
                self.metrics().into_iter().map($crate::metrics::Metric::sample).collect()
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

    /// A type that reads its values when asked.
    #[derive(Debug)]
    struct Queue {
        items: Vec<u32>,
        cap: usize,
    }

    crate::metrics! {
        impl Queue as q {
            /// items waiting
            Gauge("demo_queue_items") = q.items.len() as u64,
            /// the queue's capacity
            /// (`queue.cap`)
            Gauge("demo_queue_capacity") = q.cap as u64,
        }
    }

    #[test]
    fn values_read_at_scrape_time_are_declared_on_their_owner() {
        let mut q = Queue { items: vec![1, 2], cap: 8 };
        q.items.push(3);
        let got: Vec<_> = q.samples().into_iter().map(|s| (s.desc.name, s.desc.help(), s.desc.kind, s.value)).collect();
        assert_eq!(
            got,
            vec![
                ("demo_queue_items", "items waiting".to_string(), super::Kind::Gauge, 3),
                ("demo_queue_capacity", "the queue's capacity (`queue.cap`)".to_string(), super::Kind::Gauge, 8),
            ]
        );
    }

    #[test]
    fn the_prometheus_text_is_help_type_value() {
        let d = Demo::default();
        d.done.add(5);
        let mut out = String::new();
        for s in d.samples() {
            s.write_prometheus(&mut out);
        }
        super::write_prometheus(&mut out, "demo_made_total", "made at run time", super::Kind::Counter, 1);
        assert_eq!(
            out,
            "# HELP demo_done_total Things done, counted once each.\n# TYPE demo_done_total counter\ndemo_done_total 5\n\
             # HELP demo_waiting Things waiting.\n# TYPE demo_waiting gauge\ndemo_waiting 0\n\
             # HELP demo_made_total made at run time\n# TYPE demo_made_total counter\ndemo_made_total 1\n"
        );
    }
}
