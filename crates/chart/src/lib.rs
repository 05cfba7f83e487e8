//! λ_norm over time for one collection: every sample the worker kept
//! (`ruvector.integrity_samples`), the policy's two thresholds as lines, the
//! state as a coloured band, and each state change (and operator override)
//! from the audit history marked where it happened. Read through a normal
//! connection as any `ruvector_reader`; drawn as SVG and PNG.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use postgres::Client;

pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// One sample: Unix seconds, λ_norm and the state it left the collection in.
pub struct Sample {
    pub at: f64,
    pub lambda_norm: f64,
    pub state: String,
}

/// A state change or an override, from the audit history.
pub struct Change {
    pub at: f64,
    /// `from → to`, prefixed with "override" for an operator's pin.
    pub label: String,
}

/// What the chart shows.
pub struct Series {
    pub collection: String,
    pub samples: Vec<Sample>,
    pub changes: Vec<Change>,
    pub threshold_high: f64,
    pub threshold_low: f64,
}

/// The label a state change gets on the chart (and that a reader searches for).
pub fn change_label(event_type: &str, from: Option<&str>, to: Option<&str>) -> String {
    let arrow = format!("{} → {}", from.unwrap_or("?"), to.unwrap_or("?"));
    if event_type == "manual_override" {
        format!("override: {arrow}")
    } else {
        arrow
    }
}

/// Reads `collection`'s samples, thresholds and history.
pub fn read(client: &mut Client, collection: &str) -> Result<Series> {
    let policy = client.query_one(
        "SELECT (s->'policy'->>'threshold_high')::float8, (s->'policy'->>'threshold_low')::float8
         FROM ruvector_integrity_status($1) s",
        &[&collection],
    )?;
    let (threshold_high, threshold_low) = (policy.get(0), policy.get(1));
    let samples = client
        .query(
            "SELECT extract(epoch FROM s.sampled_at)::float8, s.lambda_norm, s.state
             FROM ruvector.integrity_samples s JOIN ruvector.collections c ON c.id = s.collection_id
             WHERE c.name = $1 ORDER BY s.sampled_at",
            &[&collection],
        )?
        .iter()
        .map(|r| Sample {
            at: r.get(0),
            lambda_norm: r.get(1),
            state: r.get(2),
        })
        .collect();
    let changes = client
        .query(
            "SELECT extract(epoch FROM h.created_at)::float8, h.event_type, h.previous_state, h.new_state
             FROM ruvector_integrity_history($1, NULL, '-infinity', 100000) h
             WHERE h.event_type IN ('state_change', 'manual_override')
             ORDER BY h.created_at",
            &[&collection],
        )?
        .iter()
        .map(|r| Change {
            at: r.get(0),
            label: change_label(r.get(1), r.get(2), r.get(3)),
        })
        .collect();
    Ok(Series {
        collection: collection.to_owned(),
        samples,
        changes,
        threshold_high,
        threshold_low,
    })
}

/// Makes a TrueType font available to the drawing (plotters draws text with
/// ab_glyph, from a font file: Debian's fonts-dejavu-core).
fn load_font() -> Result<()> {
    const CANDIDATES: [&str; 2] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    ];
    let bytes = CANDIDATES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("no TrueType font found: install fonts-dejavu-core")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
        .map_err(|_| "the font cannot be read")?;
    Ok(())
}

fn state_colour(state: &str) -> RGBColor {
    match state {
        "normal" => RGBColor(67, 160, 71),
        "stress" => RGBColor(251, 140, 0),
        "critical" => RGBColor(229, 57, 53),
        _ => RGBColor(158, 158, 158),
    }
}

/// Where the state band sits, above λ_norm's range.
const BAND: (f64, f64) = (1.06, 1.12);

fn draw<DB: DrawingBackend>(series: &Series, root: DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static + Send + Sync,
{
    root.fill(&WHITE)?;
    let start = series
        .samples
        .first()
        .map(|s| s.at)
        .or(series.changes.first().map(|c| c.at))
        .unwrap_or(0.0);
    let end = series
        .samples
        .last()
        .map(|s| s.at)
        .into_iter()
        .chain(series.changes.iter().map(|c| c.at))
        .fold(start + 1.0, f64::max);
    let x = |at: f64| at - start;
    let span = x(end);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("λ_norm of collection \"{}\" over time", series.collection),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..span * 1.15, 0.0..BAND.1)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "seconds since the first sample ({} samples)",
            series.samples.len()
        ))
        .y_desc("λ_norm")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    // The state each sample left, as a band along the top.
    chart.draw_series(series.samples.windows(2).map(|w| {
        Rectangle::new(
            [(x(w[0].at), BAND.0), (x(w[1].at), BAND.1)],
            state_colour(&w[0].state).filled(),
        )
    }))?;
    for state in ["normal", "stress", "critical"] {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(format!("state: {state}"))
            .legend(move |(px, py)| {
                Rectangle::new(
                    [(px, py - 5), (px + 16, py + 5)],
                    state_colour(state).filled(),
                )
            });
    }

    // The thresholds.
    for (name, value, colour) in [
        (
            "threshold_high",
            series.threshold_high,
            state_colour("stress"),
        ),
        (
            "threshold_low",
            series.threshold_low,
            state_colour("critical"),
        ),
    ] {
        chart
            .draw_series(LineSeries::new(
                [(0.0, value), (span * 1.15, value)],
                colour.stroke_width(2),
            ))?
            .label(format!("{name} {value:.2}"))
            .legend(move |(px, py)| {
                PathElement::new([(px, py), (px + 16, py)], colour.stroke_width(2))
            });
        chart.draw_series(std::iter::once(Text::new(
            format!("{name} {value:.2}"),
            (span * 0.01, value + 0.015),
            ("sans-serif", 13).into_font().color(&colour),
        )))?;
    }

    // λ_norm, each point in its state's colour.
    chart
        .draw_series(LineSeries::new(
            series.samples.iter().map(|s| (x(s.at), s.lambda_norm)),
            BLUE.stroke_width(2),
        ))?
        .label("λ_norm")
        .legend(|(px, py)| PathElement::new([(px, py), (px + 16, py)], BLUE.stroke_width(2)));
    chart.draw_series(
        series
            .samples
            .iter()
            .map(|s| Circle::new((x(s.at), s.lambda_norm), 3, state_colour(&s.state).filled())),
    )?;

    // Each state change where it happened, labelled; labels step down so
    // that changes close in time stay readable.
    for (i, change) in series.changes.iter().enumerate() {
        let at = x(change.at);
        chart.draw_series(DashedLineSeries::new(
            [(at, 0.0), (at, BAND.0)],
            4,
            3,
            BLACK.mix(0.6).stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            change.label.clone(),
            (at + span * 0.005, 0.96 - 0.06 * (i % 6) as f64),
            ("sans-serif", 13),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws `series` to `base`.svg and `base`.png (1200 × 600); returns both paths.
pub fn render(series: &Series, base: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    load_font()?;
    let svg = base.with_extension("svg");
    let png = base.with_extension("png");
    draw(
        series,
        SVGBackend::new(&svg, (1200, 600)).into_drawing_area(),
    )?;
    draw(
        series,
        BitMapBackend::new(&png, (1200, 600)).into_drawing_area(),
    )?;
    Ok((svg, png))
}
