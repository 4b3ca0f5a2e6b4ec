//! Charts as SVG drawn on the server from numbers: an interval plot, a
//! heatmap and line charts. Every label passes through `esc`, so user text
//! (agent names) cannot become markup; the result is a `Svg`, the only
//! kind of string the templates insert unescaped.

use std::fmt::Write;

/// SVG markup made here (labels escaped); templates insert it as is.
#[derive(Debug, Clone, Default)]
pub struct Svg(String);

impl std::fmt::Display for Svg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Svg {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Escapes text for SVG (XML) content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn clip(text: &str, n: usize) -> String {
    super::clip(text, n)
}

/// One row of an interval plot: a label, a point and its interval.
pub struct Interval {
    pub label: String,
    pub point: f64,
    pub low: f64,
    pub high: f64,
}

/// Horizontal intervals, one row each, on a shared axis; `title` names the
/// chart for screen readers.
pub fn intervals(title: &str, rows: &[Interval]) -> Svg {
    let rows: Vec<&Interval> =
        rows.iter().filter(|r| r.point.is_finite() && r.low.is_finite() && r.high.is_finite()).collect();
    if rows.is_empty() {
        return Svg::default();
    }
    let (label_w, plot_w, row_h, top) = (150.0, 400.0, 22.0, 24.0);
    let width = label_w + plot_w + 20.0;
    let height = top + row_h * rows.len() as f64 + 26.0;
    let lo = rows.iter().map(|r| r.low).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.high).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo - (hi - lo) * 0.05, hi + (hi - lo) * 0.05) };
    let x = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-labelledby="t-intervals"><title id="t-intervals">{}</title>"#,
        esc(title)
    );
    for tick in ticks(lo, hi, 5) {
        let tx = x(tick);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{tx:.1}" y1="{top:.0}" x2="{tx:.1}" y2="{:.1}"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{tick:.0}</text>"#,
            height - 22.0,
            height - 8.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let cy = top + row_h * i as f64 + row_h / 2.0;
        let _ = write!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text><line class="interval" x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}"/><circle class="point" cx="{:.1}" cy="{cy:.1}" r="4"/>"#,
            label_w - 8.0,
            cy + 4.0,
            esc(&clip(&r.label, 22)),
            x(r.low),
            x(r.high),
            x(r.point)
        );
    }
    s.push_str("</svg>");
    Svg(s)
}

/// A square heatmap of values in [0, 1] (None: no games), rows against
/// columns, with the value printed in each cell.
pub fn heatmap(title: &str, labels: &[String], cells: &[Vec<Option<f64>>]) -> Svg {
    let n = labels.len();
    if n < 2 {
        return Svg::default();
    }
    let (label_w, cell, top) = (130.0, 44.0, 100.0);
    let width = label_w + cell * n as f64 + 10.0;
    let height = top + cell * n as f64 + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-labelledby="t-heat"><title id="t-heat">{}</title>"#,
        esc(title)
    );
    for (j, label) in labels.iter().enumerate() {
        let cx = label_w + cell * j as f64 + cell / 2.0;
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{:.0}" transform="rotate(-45 {cx:.1} {:.0})">{}</text>"#,
            top - 6.0,
            top - 6.0,
            esc(&clip(label, 14))
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let y = top + cell * i as f64;
        let _ = write!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 6.0,
            y + cell / 2.0 + 4.0,
            esc(&clip(label, 18))
        );
        for j in 0..n {
            let x = label_w + cell * j as f64;
            let value = cells.get(i).and_then(|r| r.get(j)).copied().flatten();
            let (fill, text) = match value {
                Some(v) => (shade(v), format!("{:.0}%", v * 100.0)),
                None => ("#f0f2f4".to_owned(), if i == j { String::new() } else { "–".to_owned() }),
            };
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.0}" height="{cell:.0}" fill="{fill}" stroke="#ffffff"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{text}</text>"##,
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s.push_str("</svg>");
    Svg(s)
}

/// Blue for wins, red for losses, white at one half.
fn shade(v: f64) -> String {
    let v = v.clamp(0.0, 1.0);
    let (r, g, b) = if v >= 0.5 {
        let t = (v - 0.5) * 2.0;
        (255.0 - 150.0 * t, 255.0 - 100.0 * t, 255.0 - 20.0 * t)
    } else {
        let t = (0.5 - v) * 2.0;
        (255.0 - 20.0 * t, 255.0 - 140.0 * t, 255.0 - 140.0 * t)
    };
    format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
}

/// One named series of a line chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a shared x axis (`x_label`) and y axis; up to two series are
/// told apart by colour and named in a legend.
pub fn lines(title: &str, x_label: &str, series: &[Series]) -> Svg {
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if all.len() < 2 {
        return Svg::default();
    }
    let (left, right, top, bottom) = (52.0, 16.0, 26.0, 34.0);
    let (width, height) = (560.0, 220.0);
    let (x0, x1) = bounds(all.iter().map(|p| p.0));
    let (y0, y1) = bounds(all.iter().map(|p| p.1));
    let px = |v: f64| left + (v - x0) / (x1 - x0) * (width - left - right);
    let py = |v: f64| height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom);
    let mut s = String::new();
    let id = format!("t-{:x}", title.len() * 31 + series.len());
    let _ = write!(
        s,
        r#"<svg class="chart" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-labelledby="{id}"><title id="{id}">{}</title>"#,
        esc(title)
    );
    for tick in ticks(y0, y1, 4) {
        let y = py(tick);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            width - right,
            left - 6.0,
            y + 4.0,
            short(tick)
        );
    }
    for tick in ticks(x0, x1, 5) {
        let x = px(tick);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
            height - bottom + 16.0,
            short(tick)
        );
    }
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}"/><text x="{:.0}" y="{:.0}" text-anchor="middle">{}</text>"#,
        height - bottom,
        width - right,
        height - bottom,
        (left + width - right) / 2.0,
        height - 4.0,
        esc(x_label)
    );
    for (k, one) in series.iter().enumerate().take(2) {
        let class = if k == 0 { "line" } else { "line2" };
        let path: Vec<String> = one
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if path.is_empty() {
            continue;
        }
        let _ = write!(
            s,
            r#"<polyline class="{class}" points="{}"/><text x="{:.0}" y="{:.0}" class="legend">{} {}</text>"#,
            path.join(" "),
            left + 170.0 * k as f64,
            top - 10.0,
            if k == 0 { "—" } else { "- -" },
            esc(&clip(&one.name, 24))
        );
    }
    s.push_str("</svg>");
    Svg(s)
}

/// Vertical bars, one per label, with the count above each.
pub fn bars(title: &str, labels: &[String], values: &[i64]) -> Svg {
    if labels.is_empty() || labels.len() != values.len() {
        return Svg::default();
    }
    let (left, top, bottom, bar) = (10.0, 18.0, 30.0, 28.0);
    let width = left * 2.0 + bar * labels.len() as f64;
    let height = 130.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut s = String::new();
    let id = format!("t-bars-{}", title.len());
    let _ = write!(
        s,
        r#"<svg class="chart" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-labelledby="{id}"><title id="{id}">{}</title>"#,
        esc(title)
    );
    for (i, (label, value)) in labels.iter().zip(values).enumerate() {
        let h = (height - top - bottom) * (*value as f64) / max;
        let x = left + bar * i as f64;
        let y = height - bottom - h;
        let _ = write!(
            s,
            r#"<rect class="point" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{value}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + 2.0,
            bar - 4.0,
            x + bar / 2.0,
            y - 3.0,
            x + bar / 2.0,
            height - bottom + 14.0,
            esc(label)
        );
    }
    s.push_str("</svg>");
    Svg(s)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-12 { (lo - 1.0, hi + 1.0) } else { (lo, hi) }
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// About `n` round tick values between `lo` and `hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let raw = span / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    // The round step nearest to the raw one (on a log scale).
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .min_by(|a, b| (a / raw).ln().abs().total_cmp(&(b / raw).ln().abs()))
        .unwrap_or(magnitude);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        out.push(t);
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_become_markup() {
        let rows = [Interval { label: "<script>alert(1)</script>\"'&".into(), point: 1.0, low: 0.0, high: 2.0 }];
        let svg = intervals("t", &rows).to_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        let heat = heatmap("h", &["<b onload=x>".into(), "y".into()], &[vec![None, Some(0.5)], vec![Some(0.5), None]]);
        assert!(!heat.to_string().contains("<b "), "{heat}");
        let line =
            lines("l", "<x>", &[Series { name: "\"><svg onload=1>".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] }]);
        assert!(!line.to_string().contains("<svg onload"), "{line}");
    }

    #[test]
    fn ticks_are_round_and_inside() {
        let t = ticks(903.0, 1187.0, 5);
        assert!(t.len() >= 3 && t.iter().all(|v| (903.0..=1187.0).contains(v)), "{t:?}");
        assert!(t.iter().all(|v| v % 50.0 == 0.0), "{t:?}");
        assert!(ticks(1.0, 1.0, 5).is_empty());
    }

    #[test]
    fn an_empty_chart_draws_nothing() {
        assert!(intervals("t", &[]).is_empty());
        assert!(lines("t", "x", &[Series { name: "a".into(), points: vec![(0.0, 1.0)] }]).is_empty());
        assert!(heatmap("t", &["a".into()], &[vec![None]]).is_empty());
    }
}
