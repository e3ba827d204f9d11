//! The dashboard's charts, drawn on the server as inline SVG: no script, no chart library,
//! nothing fetched. Each chart carries a title and a text table of its numbers beside it,
//! so a screen reader gets the same figures.

use chrono::NaiveDate;
use maud::{Markup, html};

/// A bar chart of `(label, value)` pairs, `title` for assistive technology.
pub fn bars(title: &str, points: &[(String, i64)]) -> Markup {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 200.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 40.0;
    let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let n = points.len().max(1) as f64;
    let slot = (WIDTH - LEFT) / n;
    let bar = (slot * 0.7).max(1.0);
    let plot = HEIGHT - BOTTOM;
    // Label every k-th bar so labels do not overlap.
    let every = ((n * 40.0 / (WIDTH - LEFT)).ceil() as usize).max(1);
    html! {
        svg role="img" aria-label=(title) viewBox={"0 0 " (WIDTH) " " (HEIGHT)}
            width="100%" preserveAspectRatio="xMinYMin meet" class="chart" {
            title { (title) }
            line x1=(LEFT) y1=(plot) x2=(WIDTH) y2=(plot) stroke="#555" {}
            text x=(LEFT - 4.0) y="12" text-anchor="end" font-size="11" { (max as i64) }
            text x=(LEFT - 4.0) y=(plot) text-anchor="end" font-size="11" { "0" }
            @for (i, (label, value)) in points.iter().enumerate() {
                @let h = (*value as f64 / max) * (plot - 10.0);
                @let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
                rect x=(fmt(x)) y=(fmt(plot - h)) width=(fmt(bar)) height=(fmt(h)) fill="#2b6cb0" {
                    title { (label) ": " (value) }
                }
                @if i % every == 0 {
                    text x=(fmt(x + bar / 2.0)) y=(plot + 14.0) text-anchor="middle" font-size="10" { (label) }
                }
            }
        }
    }
}

/// One value per day from `first` to `last` (inclusive), zero where `counts` has none.
pub fn daily(counts: &[(NaiveDate, i64)], first: NaiveDate, last: NaiveDate) -> Vec<(String, i64)> {
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| {
            let n = counts
                .iter()
                .find(|(day, _)| *day == d)
                .map_or(0, |(_, n)| *n);
            (d.format("%m-%d").to_string(), n)
        })
        .collect()
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_without_archives_are_zero_and_bars_scale_to_the_largest() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let points = daily(&[(d("2026-11-02"), 4)], d("2026-11-01"), d("2026-11-03"));
        assert_eq!(
            points,
            vec![
                ("11-01".into(), 0),
                ("11-02".into(), 4),
                ("11-03".into(), 0)
            ]
        );
        let svg = bars("Archived per day", &points).into_string();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(
            svg.contains("height=\"150.0\""),
            "the largest bar fills the plot: {svg}"
        );
        assert!(svg.contains("11-02: 4"));
    }
}
