//! Bar charts drawn on the server as SVG: no script, no CDN, works offline. The template
//! draws the shapes; every number it shows also appears in a table beside the chart.

use crate::queries::dashboard::Bucket;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 170;
/// Room below the bars for the first and last labels.
const AXIS: u32 = 20;

#[derive(Debug, Clone)]
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// The bucket and its count, shown as the bar's tooltip.
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub baseline: u32,
    pub bars: Vec<Bar>,
    pub max: i64,
    pub first_label: String,
    pub last_label: String,
}

impl BarChart {
    /// Bars of time buckets, whose labels are UTC times.
    pub fn new(title: &str, buckets: &[Bucket]) -> Self {
        Self::drawn(title, buckets, " UTC")
    }

    /// Bars of other bands (lengths, sizes), labelled as they are.
    pub fn bands(title: &str, buckets: &[Bucket]) -> Self {
        Self::drawn(title, buckets, "")
    }

    fn drawn(title: &str, buckets: &[Bucket], zone: &str) -> Self {
        let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
        let plot = HEIGHT - AXIS;
        let slot = WIDTH / u32::try_from(buckets.len().max(1)).unwrap_or(1);
        let bars = buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                let height = if max == 0 {
                    0
                } else {
                    // At least one pixel, so a small non-zero count is visible.
                    let scaled = bucket.count * i64::from(plot) / max;
                    u32::try_from(scaled)
                        .unwrap_or(plot)
                        .max(u32::from(bucket.count > 0))
                };
                Bar {
                    x: u32::try_from(i).unwrap_or(0) * slot + 1,
                    y: plot - height,
                    width: slot.saturating_sub(2).max(1),
                    height,
                    title: format!("{}{zone}: {}", bucket.label, bucket.count),
                }
            })
            .collect();
        Self {
            title: title.to_owned(),
            width: WIDTH,
            height: HEIGHT,
            baseline: plot,
            bars,
            max,
            first_label: buckets.first().map(|b| b.label.clone()).unwrap_or_default(),
            last_label: buckets.last().map(|b| b.label.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(label: &str, count: i64) -> Bucket {
        Bucket {
            label: label.into(),
            count,
        }
    }

    #[test]
    fn the_tallest_bar_fills_the_plot_and_small_counts_stay_visible() {
        let chart = BarChart::new("t", &[bucket("a", 0), bucket("b", 1), bucket("c", 1000)]);
        assert_eq!(chart.bars[0].height, 0);
        assert_eq!(chart.bars[1].height, 1);
        assert_eq!(chart.bars[2].height, HEIGHT - AXIS);
        assert_eq!(chart.bars[2].y, 0);
        assert_eq!(chart.bars[2].title, "c UTC: 1000");
        assert_eq!(
            (chart.first_label.as_str(), chart.last_label.as_str()),
            ("a", "c")
        );
    }

    #[test]
    fn an_empty_series_draws_nothing_tall() {
        let chart = BarChart::new("t", &[bucket("a", 0)]);
        assert_eq!(chart.max, 0);
        assert!(chart.bars.iter().all(|b| b.height == 0));
    }
}
