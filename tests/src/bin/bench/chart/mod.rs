//! The Go-vs-tether chart written beside BENCHMARKS.md: an SVG written by hand, one bar pair
//! per figure. Figures are grouped into panels by unit, so every axis carries one unit; a panel
//! whose values span ten times or more gets a log axis (the gap between a pair's bar ends then
//! shows the ratio, the same way for every row of it), the others a linear axis from zero.
//!
//! The chart is drawn from the markdown table itself ([`parse_table`]), so one source of truth
//! feeds both, and an existing BENCHMARKS.md can be charted without rerunning the bench.

mod by_n;

pub use by_n::{by_n, Panel, Series};
use std::fmt::Write as _;

/// One row of the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    /// `kB`, `ms`, ...; empty for a plain count.
    pub unit: String,
    pub go: f64,
    pub ours: f64,
    /// tether / Go as the table gives it (from unrounded values; NaN when Go's is zero).
    pub ratio: f64,
}

/// The Go-vs-tether rows of a BENCHMARKS.md: `| name | 12.00 kB | 3.00 kB | 0.25 |`. Other
/// tables (the manager's has two columns), the header, and rows without two finite values of
/// one unit are left out.
pub fn parse_table(md: &str) -> Vec<Figure> {
    md.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            let [name, go, ours, ratio] = cells[..] else {
                return None;
            };
            let (go, go_unit) = value(go)?;
            let (ours, ours_unit) = value(ours)?;
            (go_unit == ours_unit && go.is_finite() && ours.is_finite()).then(|| Figure {
                name: name.to_string(),
                unit: go_unit.to_string(),
                go,
                ours,
                ratio: ratio.parse().unwrap_or(f64::NAN),
            })
        })
        .collect()
}

/// `2695.94 kB` -> (2695.94, "kB"); `12.00` -> (12.0, "").
fn value(cell: &str) -> Option<(f64, &str)> {
    let (num, unit) = cell.split_once(' ').unwrap_or((cell, ""));
    Some((num.parse().ok()?, unit.trim()))
}

/// Where a value falls along a panel's axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Decades from `lo` to `hi` (both powers of ten, `lo` strictly below the smallest
    /// positive value so that it still gets a bar).
    Log { lo: f64, hi: f64 },
    /// From zero to `hi`, a round number at or above the largest value.
    Linear { hi: f64 },
}

impl Scale {
    /// Log when the positive values span 10x or more, linear otherwise.
    pub fn for_values(values: &[f64]) -> Scale {
        let positive = values.iter().copied().filter(|v| *v > 0.0);
        let max = positive.clone().fold(0.0, f64::max);
        let min = positive.fold(f64::INFINITY, f64::min);
        if max <= 0.0 {
            return Scale::Linear { hi: 1.0 };
        }
        if max / min >= 10.0 {
            Scale::Log {
                lo: 10f64.powi(min.log10().ceil() as i32 - 1),
                hi: 10f64.powi(max.log10().floor() as i32 + 1),
            }
        } else {
            Scale::Linear { hi: nice_ceil(max) }
        }
    }

    /// The fraction of the axis (0..=1) at `v`; zero and negatives sit at the start.
    pub fn frac(&self, v: f64) -> f64 {
        let f = match *self {
            Scale::Log { lo, hi } if v > 0.0 => {
                (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
            }
            Scale::Log { .. } => 0.0,
            Scale::Linear { hi } => v / hi,
        };
        f.clamp(0.0, 1.0)
    }

    /// Grid lines: every decade, or four to six round steps from zero.
    pub fn ticks(&self) -> Vec<f64> {
        match *self {
            Scale::Log { lo, hi } => {
                let (a, b) = (lo.log10().round() as i32, hi.log10().round() as i32);
                (a..=b).map(|e| 10f64.powi(e)).collect()
            }
            Scale::Linear { hi } => {
                let mag = 10f64.powf(hi.log10().floor());
                let step = match hi / mag {
                    r if r < 2.0 => mag / 2.0,
                    r if r <= 5.0 => mag,
                    _ => mag * 2.0,
                };
                let n = (hi / step).round() as usize;
                (0..=n).map(|i| i as f64 * step).collect()
            }
        }
    }

    fn is_log(&self) -> bool {
        matches!(self, Scale::Log { .. })
    }
}

/// The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10 times a power of ten that is >= `v`.
fn nice_ceil(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

/// A tick label without float noise: `0.1`, `1`, `10000`.
fn tick_label(v: f64) -> String {
    let decimals = if v > 0.0 && v < 1.0 {
        (-v.log10().floor()) as usize
    } else if v.fract().abs() > 1e-9 {
        1
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// A value as the bar's label: three significant figures or so.
fn value_label(v: f64, unit: &str) -> String {
    let n = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() {
        n
    } else {
        format!("{n} {unit}")
    }
}

/// Text as SVG character data: markdown code ticks dropped, arrows drawn, XML escaped.
fn text(s: &str) -> String {
    s.replace('`', "")
        .replace("->", "→")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Units where more is better; everything else in the table is a cost.
fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

pub const GO: &str = "#00add8";
pub const OURS: &str = "#ce422b";
const WIDTH: f64 = 980.0;
const LABEL_W: f64 = 390.0;
const PLOT_X: f64 = LABEL_W + 12.0;
const PLOT_W: f64 = 400.0;
const RATIO_X: f64 = WIDTH - 16.0;
const BAR_H: f64 = 10.0;
const ROW_H: f64 = 30.0;
const PANEL_HEAD: f64 = 40.0;
const TOP: f64 = 78.0;

/// The SVG of `figures`: one panel per unit, in order of first appearance.
pub fn svg(title: &str, figures: &[Figure]) -> String {
    let mut units: Vec<&str> = Vec::new();
    for f in figures {
        if !units.contains(&f.unit.as_str()) {
            units.push(&f.unit);
        }
    }
    let height = TOP + units.len() as f64 * PANEL_HEAD + figures.len() as f64 * ROW_H + 16.0;
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    // Opaque, so the chart reads the same on a dark page.
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="26" font-size="17" font-weight="bold">{}</text>"#,
        text(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="16" y="46" fill="#555">Shorter is better, except throughput (MiB/s). Each panel has one unit; log axis where its values span 10x or more.</text>"##
    );
    // Legend.
    for (i, (colour, name)) in [
        (GO, "containerd-shim-runc-v2 (Go)"),
        (OURS, "containerd-shim-tether-v2"),
    ]
    .iter()
    .enumerate()
    {
        let x = 16.0 + i as f64 * 250.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="56" width="14" height="10" fill="{colour}"/><text x="{}" y="65">{name}</text>"#,
            x + 20.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{RATIO_X}" y="65" text-anchor="end" font-weight="bold">tether / Go</text>"#
    );

    let mut y = TOP;
    for unit in units {
        let rows: Vec<&Figure> = figures.iter().filter(|f| f.unit == unit).collect();
        let values: Vec<f64> = rows.iter().flat_map(|f| [f.go, f.ours]).collect();
        let scale = Scale::for_values(&values);
        let heading = match (unit, scale.is_log()) {
            ("", true) => "count (log scale)".to_string(),
            ("", false) => "count".to_string(),
            (u, true) => format!("{u} (log scale)"),
            (u, false) => u.to_string(),
        };
        let _ = writeln!(
            s,
            r##"<text x="16" y="{}" font-weight="bold" fill="#333">{}</text>"##,
            y + 20.0,
            text(&heading)
        );
        let body = rows.len() as f64 * ROW_H;
        let (grid_top, grid_bottom) = (y + PANEL_HEAD - 8.0, y + PANEL_HEAD + body - 4.0);
        for t in scale.ticks() {
            let x = PLOT_X + scale.frac(t) * PLOT_W;
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{grid_top}\" x2=\"{x:.1}\" y2=\"{grid_bottom}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#777\">{}</text>",
                grid_top - 3.0,
                tick_label(t)
            );
        }
        y += PANEL_HEAD;
        for f in rows {
            let _ = writeln!(
                s,
                r#"<text x="{LABEL_W}" y="{}" text-anchor="end">{}</text>"#,
                y + BAR_H + 5.0,
                text(&f.name)
            );
            for (i, (class, colour, v)) in [("go", GO, f.go), ("tether", OURS, f.ours)]
                .iter()
                .enumerate()
            {
                let top = y + i as f64 * (BAR_H + 2.0);
                let w = scale.frac(*v) * PLOT_W;
                let _ = writeln!(
                    s,
                    r##"<rect class="{class}" x="{PLOT_X}" y="{top}" width="{w:.1}" height="{BAR_H}" fill="{colour}"/><text x="{:.1}" y="{}" font-size="10" fill="#333">{}</text>"##,
                    PLOT_X + w + 4.0,
                    top + BAR_H - 1.0,
                    text(&value_label(*v, &f.unit))
                );
            }
            let ratio = if f.ratio.is_finite() {
                format!("{:.2}", f.ratio)
            } else {
                "n/a".to_string()
            };
            let better = if higher_is_better(&f.unit) {
                f.ratio > 1.0
            } else {
                f.ratio < 1.0
            };
            let _ = writeln!(
                s,
                r#"<text x="{RATIO_X}" y="{}" text-anchor="end" font-weight="bold" fill="{}">{ratio}</text>"#,
                y + BAR_H + 5.0,
                if better { "#1a7f37" } else { "#b42318" }
            );
            y += ROW_H;
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# Benchmarks\n\nintro\n\n\
        | figure | containerd-shim-runc-v2 (Go) | containerd-shim-tether-v2 | tether / Go |\n\
        |---|---|---|---|\n\
        | PSS per shim, idle containers | 2695.94 kB | 237.70 kB | 0.09 |\n\
        | threads of one idle shim | 12.00  | 1.00  | 0.08 |\n\
        | `ctr run --rm /bin/true`, median | 244.74 ms | 151.50 ms | 0.62 |\n\
        | process exit -> `exited_at`, median | 4.91 ms | 1.33 ms | 0.27 |\n\
        | `State` while a `runc exec` hangs, max | 0.72 ms | 5.42 ms | 7.58 |\n\
        | stdout through the shim (`dd bs=1M` to `ctr`) | 128.71 MiB/s | 474.63 MiB/s | 3.69 |\n\
        | not measured | NaN ms | NaN ms | NaN |\n\
        | wake-ups of one idle shim per minute | 107.00  | 0.00  | 0.00 |\n\n\
        ## Manager\n\n| figure | tether |\n|---|---|\n| daemon threads | 13 |\n";

    /// Tags balance and every `&` starts an entity: enough of XML to catch what a hand-written
    /// writer gets wrong. Returns the element names in document order.
    fn check_xml(doc: &str) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = doc.strip_prefix("<?xml").expect("XML declaration");
        rest = &rest[rest.find("?>").expect("declaration closed") + 2..];
        while let Some(lt) = rest.find('<') {
            let chars = &rest[..lt];
            assert!(!chars.contains('>'), "stray > in {chars:?}");
            for (i, _) in chars.match_indices('&') {
                let entity = &chars[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "bare & in {chars:?}"
                );
            }
            let gt = rest[lt..].find('>').expect("tag closed") + lt;
            let tag = &rest[lt + 1..gt];
            assert!(!tag.contains('<'), "< inside tag {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag:?}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name = tag
                    .split_whitespace()
                    .next()
                    .expect("tag name")
                    .trim_end_matches('/');
                seen.push(name.to_string());
                if !tag.ends_with('/') {
                    open.push(name.to_string());
                }
            }
            rest = &rest[gt + 1..];
        }
        assert!(open.is_empty(), "unclosed {open:?}");
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
        assert_eq!(seen.first().map(String::as_str), Some("svg"));
        seen
    }

    #[test]
    fn parses_the_comparison_table_only() {
        let figures = parse_table(TABLE);
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "PSS per shim, idle containers",
                "threads of one idle shim",
                "`ctr run --rm /bin/true`, median",
                "process exit -> `exited_at`, median",
                "`State` while a `runc exec` hangs, max",
                "stdout through the shim (`dd bs=1M` to `ctr`)",
                "wake-ups of one idle shim per minute",
            ]
        );
        assert_eq!(
            figures[0],
            Figure {
                name: names[0].into(),
                unit: "kB".into(),
                go: 2695.94,
                ours: 237.70,
                ratio: 0.09,
            }
        );
        assert_eq!(
            (figures[1].unit.as_str(), figures[1].go, figures[1].ours),
            ("", 12.0, 1.0)
        );
    }

    #[test]
    fn svg_is_well_formed_with_one_bar_pair_per_figure() {
        let figures = parse_table(TABLE);
        let doc = svg("Go & tether <bench>", &figures);
        let elements = check_xml(&doc);
        assert_eq!(doc.matches(r#"<rect class="go""#).count(), figures.len());
        assert_eq!(
            doc.matches(r#"<rect class="tether""#).count(),
            figures.len()
        );
        // Background, two legend swatches, and the bars.
        assert_eq!(
            elements.iter().filter(|e| *e == "rect").count(),
            3 + 2 * figures.len()
        );
        assert!(doc.contains("Go &amp; tether &lt;bench&gt;"));
        assert!(
            doc.contains("process exit → exited_at, median"),
            "code ticks dropped, arrow drawn"
        );
        // One panel per unit, counts on a log axis (107 vs 1 thread), MiB/s linear.
        assert!(doc.contains(">count (log scale)<"));
        assert!(doc.contains(">MiB/s<"));
        // The better-or-worse colour follows the unit: more MiB/s is better.
        assert!(doc.contains(r##"fill="#1a7f37">3.69<"##));
        // The table's ratio (from unrounded values: 5.42 / 0.72 would be 7.53), a cost that grew.
        assert!(doc.contains(r##"fill="#b42318">7.58<"##));
    }

    #[test]
    fn by_n_chart_is_well_formed_with_one_line_per_series() {
        let series = |colour, k: f64| Series {
            name: format!("stack {colour}"),
            colour,
            points: vec![
                (100.0, k),
                (250.0, 2.5 * k),
                (500.0, f64::NAN),
                (1000.0, 10.0 * k),
            ],
        };
        let panels = [
            Panel {
                title: "PSS of all shims".into(),
                unit: "MB".into(),
                series: vec![series(GO, 270.0), series(OURS, 22.0)],
            },
            Panel {
                title: "burst <exits> & more".into(),
                unit: String::new(),
                series: vec![series(GO, 1.0), series(OURS, 1.0)],
            },
            Panel {
                title: "nothing measured".into(),
                unit: "ms".into(),
                series: vec![Series {
                    name: "none".into(),
                    colour: GO,
                    points: vec![(100.0, f64::NAN)],
                }],
            },
        ];
        let doc = by_n("Scale & N", &panels);
        let elements = check_xml(&doc);
        // Two panels with two lines each; the empty one has none. NaN points are skipped.
        assert_eq!(doc.matches(r#"<polyline class="line""#).count(), 4);
        assert_eq!(elements.iter().filter(|e| *e == "circle").count(), 4 * 3);
        assert!(doc.contains("burst &lt;exits&gt; &amp; more"));
        // 22 to 2700 spans 10x and more: that panel is on a log axis.
        assert!(doc.contains("PSS of all shims (MB, log)"));
        // Ticks at the measured N, NaN included (an N the other stack reached).
        assert!(doc.contains(">1000</text>"));
    }

    #[test]
    fn log_scale_when_values_span_ten_times() {
        let s = Scale::for_values(&[2695.94, 237.70, 13192.0]);
        assert_eq!(
            s,
            Scale::Log {
                lo: 100.0,
                hi: 100_000.0
            }
        );
        // Decades are evenly spaced.
        assert!((s.frac(1000.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.frac(10_000.0) - 2.0 / 3.0).abs() < 1e-12);
        // A ratio is the same distance wherever it sits on the axis.
        let gap = |a: f64, b: f64| s.frac(a) - s.frac(b);
        assert!((gap(2000.0, 200.0) - gap(50_000.0, 5000.0)).abs() < 1e-12);
        assert_eq!(s.ticks(), [100.0, 1000.0, 10_000.0, 100_000.0]);
        // A value that is a power of ten still gets a bar; zero gets none.
        let counts = Scale::for_values(&[12.0, 1.0, 107.0, 0.0]);
        assert_eq!(
            counts,
            Scale::Log {
                lo: 0.1,
                hi: 1000.0
            }
        );
        assert!(counts.frac(1.0) > 0.0);
        assert_eq!(counts.frac(0.0), 0.0);
        assert_eq!(
            Scale::for_values(&[0.37, 0.2, 5.42]),
            Scale::Log { lo: 0.1, hi: 10.0 }
        );
    }

    #[test]
    fn linear_scale_from_zero_otherwise() {
        let s = Scale::for_values(&[128.71, 474.63]);
        assert_eq!(s, Scale::Linear { hi: 500.0 });
        assert_eq!(s.frac(250.0), 0.5);
        assert_eq!(s.ticks(), [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        assert_eq!(
            Scale::for_values(&[5.28, 0.59]).ticks(),
            [0.0, 2.0, 4.0, 6.0]
        );
        assert_eq!(Scale::for_values(&[0.0, 0.0]), Scale::Linear { hi: 1.0 });
        assert_eq!(tick_label(0.001), "0.001");
        assert_eq!(tick_label(100_000.0), "100000");
    }
}
