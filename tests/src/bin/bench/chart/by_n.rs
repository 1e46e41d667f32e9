//! Figures against N (the scale report): one panel per figure, one line per stack.

use super::*;

/// One line of a by-N panel: a stack's value at each N (NaN: not measured, no point drawn).
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One figure against N: one line per series.
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 470.0;
const PANEL_H: f64 = 230.0;
const PAD_L: f64 = 58.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 44.0;
const PAD_B: f64 = 34.0;

/// The SVG of `panels`, two per row: N along a linear axis from zero (ticks at the measured
/// N), the value on [`Scale::for_values`]'s axis (log when it spans 10x or more).
pub fn by_n(title: &str, panels: &[Panel]) -> String {
    let rows = panels.len().div_ceil(2);
    let legend: Vec<(&str, &str)> = panels
        .first()
        .map(|p| {
            p.series
                .iter()
                .map(|s| (s.name.as_str(), s.colour))
                .collect()
        })
        .unwrap_or_default();
    let top = 64.0;
    let (w, h) = (2.0 * PANEL_W + 20.0, top + rows as f64 * PANEL_H + 10.0);
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="16" y="26" font-size="17" font-weight="bold">{}</text>"#,
        text(title)
    );
    let mut x = 16.0;
    for (name, colour) in &legend {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="38" width="14" height="10" fill="{colour}"/><text x="{}" y="47">{}</text>"#,
            x + 20.0,
            text(name)
        );
        x += 30.0 + 7.0 * name.chars().count() as f64;
    }
    for (k, p) in panels.iter().enumerate() {
        let (ox, oy) = (
            10.0 + (k % 2) as f64 * PANEL_W,
            top + (k / 2) as f64 * PANEL_H,
        );
        panel(&mut s, p, ox, oy);
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn panel(s: &mut String, p: &Panel, ox: f64, oy: f64) {
    let values: Vec<f64> = p
        .series
        .iter()
        .flat_map(|l| l.points.iter().map(|pt| pt.1))
        .filter(|v| v.is_finite())
        .collect();
    let mut ns: Vec<f64> = p
        .series
        .iter()
        .flat_map(|l| l.points.iter().map(|pt| pt.0))
        .collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    ns.dedup();
    let n_max = ns.last().copied().unwrap_or(1.0).max(1.0);
    let scale = Scale::for_values(&values);
    let (x0, x1) = (ox + PAD_L, ox + PANEL_W - PAD_R);
    let (y0, y1) = (oy + PANEL_H - PAD_B, oy + PAD_T);
    let px = |n: f64| x0 + n / n_max * (x1 - x0);
    let py = |v: f64| y0 - scale.frac(v) * (y0 - y1);
    let heading = match (p.unit.as_str(), scale.is_log()) {
        ("", false) => p.title.clone(),
        ("", true) => format!("{} (log)", p.title),
        (u, false) => format!("{} ({u})", p.title),
        (u, true) => format!("{} ({u}, log)", p.title),
    };
    // Long titles are cut to the panel's width (the report's tables carry them whole).
    let mut heading: String = text(&heading).chars().take(64).collect();
    if heading.chars().count() == 64 {
        heading.push('…');
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="11" font-weight="bold" fill="#333">{heading}</text>"##,
        ox + 8.0,
        oy + 24.0
    );
    for t in scale.ticks() {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10" fill="#777">{}</text>"##,
            x0 - 4.0,
            y + 3.0,
            tick_label(t)
        );
    }
    for n in &ns {
        let x = px(*n);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" text-anchor="middle" font-size="10" fill="#777">{}</text>"##,
            y0 + 4.0,
            y0 + 15.0,
            tick_label(*n)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="end" font-size="10" fill="#777">N</text>"##,
        x1,
        y0 + 28.0
    );
    for l in &p.series {
        let pts: Vec<(f64, f64)> = l
            .points
            .iter()
            .filter(|pt| pt.1.is_finite())
            .map(|&(n, v)| (px(n), py(v)))
            .collect();
        if pts.len() > 1 {
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline class="line" points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.join(" "),
                l.colour
            );
        }
        for (x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                l.colour
            );
        }
    }
}
