//! Plain SVG charts for `cargo wave sim --plot` (no dependencies, no fonts: text is SVG
//! `<text>`, drawn by the viewer): a line chart ([`lines`]) and a horizontal bar chart
//! ([`bars`]). Each chart carries the command that made it in its caption.

use std::format;
use std::string::String;
use std::vec::Vec;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(title: &str, caption: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n<text x=\"8\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>\n",
        W / 2.0,
        esc(title),
        H - 8.0,
        esc(caption)
    )
}

/// Round numbers for `n` ticks over `[0, max]`.
fn ticks(max: f64) -> Vec<f64> {
    let raw = (max / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (0..=((max / step).ceil() as usize))
        .map(|i| i as f64 * step)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart of `series` (name, points), linear axes from 0.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    caption: &str,
) -> String {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (xmax, ymax) = pts.fold((0f64, 0f64), |(a, b), p| (a.max(p.0), b.max(p.1)));
    let (xt, yt) = (ticks(xmax), ticks(ymax));
    let (xm, ym) = (*xt.last().unwrap_or(&1.0), *yt.last().unwrap_or(&1.0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / xm.max(1e-9) * pw;
    let y = |v: f64| TOP + ph - v / ym.max(1e-9) * ph;
    let mut o = header(title, caption);
    for &t in &xt {
        o += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
            x(t), TOP, TOP + ph, TOP + ph + 16.0, fmt_tick(t)
        );
    }
    for &t in &yt {
        o += &format!(
            "<line x1=\"{0}\" y1=\"{1:.1}\" x2=\"{2}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{3}\" y=\"{4:.1}\" text-anchor=\"end\">{5}</text>\n",
            LEFT, y(t), LEFT + pw, LEFT - 6.0, y(t) + 4.0, fmt_tick(t)
        );
    }
    o += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text transform=\"translate(18,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        LEFT + pw / 2.0, TOP + ph + 36.0, esc(x_label), TOP + ph / 2.0, esc(y_label)
    );
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        o += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for &(a, b) in p {
            o += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                x(a),
                y(b)
            );
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        o += &format!(
            "<line x1=\"{0}\" y1=\"{1:.1}\" x2=\"{2}\" y2=\"{1:.1}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{3}\" y=\"{4:.1}\">{5}</text>\n",
            W - RIGHT + 12.0, ly, W - RIGHT + 32.0, W - RIGHT + 38.0, ly + 4.0, esc(name)
        );
    }
    o + "</svg>\n"
}

/// A horizontal bar chart of `(label, value)`.
pub fn bars(title: &str, x_label: &str, items: &[(String, f64)], caption: &str) -> String {
    let vmax = items.iter().fold(0f64, |a, i| a.max(i.1));
    let t = ticks(vmax);
    let xm = *t.last().unwrap_or(&1.0);
    let left = 190.0;
    let pw = W - left - 40.0;
    let ph = H - TOP - BOTTOM;
    let bh = ph / items.len().max(1) as f64;
    let x = |v: f64| left + v / xm.max(1e-9) * pw;
    let mut o = header(title, caption);
    for &v in &t {
        o += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
            x(v), TOP, TOP + ph, TOP + ph + 16.0, fmt_tick(v)
        );
    }
    for (i, (label, v)) in items.iter().enumerate() {
        let top = TOP + i as f64 * bh;
        o += &format!(
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            top + bh * 0.15, x(*v) - left, bh * 0.7, COLORS[0], left - 6.0, top + bh * 0.6, esc(label)
        );
    }
    o += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        left + pw / 2.0,
        TOP + ph + 36.0,
        esc(x_label)
    );
    o + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let s = lines(
            "GET p99 vs load",
            "load",
            "µs",
            &[("a<b".into(), std::vec![(0.1, 5.0), (0.5, 40.0)])],
            "cargo wave sim --sweep 0.1,0.5",
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a&lt;b") && s.contains("<polyline") && s.contains("--sweep"));
        let b = bars(
            "ablation",
            "µs",
            &[("all on".into(), 3.0), ("all off".into(), 9.0)],
            "c",
        );
        assert_eq!(b.matches("<rect").count(), 3); // background + 2 bars
        assert_eq!(ticks(9.0), std::vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }
}
