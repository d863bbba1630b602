//! Draws a [`Figure`] as SVG and PNG. `plotters` lays the panels out and draws them as SVG;
//! `usvg` then turns every glyph into a path with the embedded DejaVu Sans (so neither file
//! depends on the fonts of the machine that views it), and `resvg` rasterises the same tree to
//! PNG, so the two files show the same picture.

use super::ReportError;
use super::figures::{Figure, Panel};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::element::ErrorBar;
use plotters::prelude::*;
use resvg::{tiny_skia, usvg};
use std::sync::{Arc, LazyLock};

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const PANEL: (u32, u32) = (600, 340);
const TITLE: u32 = 44;
/// Tableau 10: distinguishable, and readable in grey.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

static OPTIONS: LazyLock<usvg::Options<'static>> = LazyLock::new(|| {
    let mut db = usvg::fontdb::Database::new();
    db.load_font_data(FONT.to_vec());
    // Every generic family plotters may name resolves to the one embedded font.
    db.set_sans_serif_family("DejaVu Sans");
    db.set_serif_family("DejaVu Sans");
    db.set_monospace_family("DejaVu Sans");
    usvg::Options {
        fontdb: Arc::new(db),
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    }
});

/// A figure as SVG (text as paths) and PNG bytes.
pub struct Rendered {
    pub svg: String,
    pub png: Vec<u8>,
}

fn plot_error(e: impl std::fmt::Display) -> ReportError {
    ReportError::Render(e.to_string())
}

/// `(lo, hi)` widened by 5 % (and made non-empty), for a linear axis.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.05 * span
    } else {
        0.5 * lo.abs().max(1.0)
    };
    (lo - pad, hi + pad)
}

pub fn render(figure: &Figure) -> Result<Rendered, ReportError> {
    let n = figure.panels.len().max(1) as u32;
    let cols = n.min(3);
    let rows = n.div_ceil(cols);
    let size = (cols * PANEL.0, rows * PANEL.1 + TITLE);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, body) = root.split_vertically(TITLE);
        top.titled(&figure.title, ("sans-serif", 22))
            .map_err(plot_error)?;
        let areas = body.split_evenly((rows as usize, cols as usize));
        for (panel, area) in figure.panels.iter().zip(&areas) {
            let ((x0, x1), y) = panel.extent();
            let (y0, y1) = padded(y);
            if figure.x.log {
                let (lo, hi) = (x0 / 1.5, x1 * 1.5);
                draw_panel(area, figure, panel, (lo..hi).log_scale(), y0..y1)?;
            } else {
                let (lo, hi) = padded((x0, x1));
                draw_panel(area, figure, panel, lo..hi, y0..y1)?;
            }
        }
        root.present().map_err(plot_error)?;
    }
    let tree = usvg::Tree::from_str(&svg, &OPTIONS).map_err(plot_error)?;
    let svg = tree.to_string(&usvg::WriteOptions::default());
    let px = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(px.width(), px.height())
        .ok_or_else(|| ReportError::Render("empty figure".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let png = pixmap.encode_png().map_err(plot_error)?;
    Ok(Rendered { svg, png })
}

/// A series' colour: one per method within a panel (its n:m and calibration-size variants
/// share it), black for the dense reference.
fn colors(panel: &Panel) -> Vec<RGBColor> {
    let base = |label: &str| label.split([' ', ',']).next().unwrap_or(label).to_string();
    let mut methods: Vec<String> = Vec::new();
    panel
        .series
        .iter()
        .map(|s| {
            if s.label == "dense" {
                return BLACK;
            }
            let b = base(&s.label);
            let i = methods.iter().position(|m| *m == b).unwrap_or_else(|| {
                methods.push(b);
                methods.len() - 1
            });
            PALETTE[i % PALETTE.len()]
        })
        .collect()
}

/// A variant of a method (n:m pattern, another calibration size, after retraining) is drawn
/// with square markers.
fn variant(label: &str) -> bool {
    label.contains('(') || label.contains(", ")
}

const LEGEND: u32 = 170;

/// A short tick label: thousands as `k`, integers without decimals, small values with two.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || (v.fract() == 0.0 && a >= 1.0) {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_panel<DB, X>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    figure: &Figure,
    panel: &Panel,
    x: X,
    y: std::ops::Range<f64>,
) -> Result<(), ReportError>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let (plot, legend) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND);
    let mut chart = ChartBuilder::on(&plot)
        .caption(&panel.title, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(x, y)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(&figure.x.label)
        .y_desc(&figure.y.label)
        .light_line_style(WHITE.mix(0.0))
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(plot_error)?;
    let colors = colors(panel);
    for (s, &color) in panel.series.iter().zip(&colors) {
        let style = color.stroke_width(2);
        let xy: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.y)).collect();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(xy.clone(), 6, 4, style))
                .map_err(plot_error)?;
        } else if figure.lines {
            chart
                .draw_series(LineSeries::new(xy.clone(), style))
                .map_err(plot_error)?;
        }
        if !s.dashed || s.label != "dense" {
            if variant(&s.label) {
                chart.draw_series(xy.iter().map(|&(px, py)| {
                    EmptyElement::at((px, py)) + Rectangle::new([(-4, -4), (4, 4)], color.filled())
                }))
            } else {
                chart.draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))
            }
            .map_err(plot_error)?;
        }
        let bars = s.points.iter().filter_map(|p| {
            p.err.map(|e| {
                ErrorBar::new_vertical(p.x, p.y - e, p.y, p.y + e, color.stroke_width(1), 6)
            })
        });
        chart.draw_series(bars).map_err(plot_error)?;
    }
    // The legend beside the plot, one line per series, in drawing order.
    let font = ("sans-serif", 11).into_font();
    for (i, (s, &color)) in panel.series.iter().zip(&colors).enumerate() {
        let y = 40 + 16 * i as i32;
        if y > legend.dim_in_pixel().1 as i32 - 8 {
            break;
        }
        let line = vec![(4, y), (26, y)];
        if s.dashed {
            legend
                .draw(&PathElement::new(
                    vec![(4, y), (10, y)],
                    color.stroke_width(2),
                ))
                .and_then(|_| {
                    legend.draw(&PathElement::new(
                        vec![(16, y), (26, y)],
                        color.stroke_width(2),
                    ))
                })
        } else {
            legend.draw(&PathElement::new(line, color.stroke_width(2)))
        }
        .map_err(plot_error)?;
        if variant(&s.label) {
            legend.draw(&Rectangle::new([(12, y - 3), (18, y + 3)], color.filled()))
        } else if !s.dashed {
            legend.draw(&Circle::new((15, y), 3, color.filled()))
        } else {
            Ok(())
        }
        .map_err(plot_error)?;
        legend
            .draw(&Text::new(s.label.clone(), (32, y - 7), font.clone()))
            .map_err(plot_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::figures::{Axis, Point, Series};

    /// Both files hold the figure: the SVG parses, has no text left for a viewer's fonts, and
    /// has the layout's size; the PNG decodes to the same size and is not blank.
    #[test]
    fn svg_and_png_show_the_same_figure() {
        let series = |label: &str, dashed| Series {
            label: label.into(),
            points: vec![
                Point {
                    x: 0.5,
                    y: 80.0,
                    err: Some(2.0),
                },
                Point {
                    x: 0.7,
                    y: 40.0,
                    err: None,
                },
            ],
            dashed,
        };
        let panel = |t: &str| Panel {
            title: t.into(),
            series: vec![
                series("wanda", false),
                series("wanda (2:4)", false),
                series("dense", true),
            ],
        };
        let f = Figure {
            name: "t".into(),
            title: "Accuracy against sparsity".into(),
            x: Axis {
                label: "sparsity".into(),
                log: false,
            },
            y: Axis {
                label: "top-1 (%)".into(),
                log: false,
            },
            panels: vec![panel("a"), panel("b"), panel("c"), panel("d")],
            lines: true,
        };
        let r = render(&f).unwrap();
        assert!(!r.svg.contains("<text"));
        let tree = usvg::Tree::from_str(&r.svg, &OPTIONS).unwrap();
        let (w, h) = (3 * PANEL.0, 2 * PANEL.1 + TITLE);
        assert_eq!(
            tree.size().to_int_size(),
            tiny_skia::IntSize::from_wh(w, h).unwrap()
        );
        let png = image::load_from_memory(&r.png).unwrap().to_rgba8();
        assert_eq!(png.dimensions(), (w, h));
        let coloured = png.pixels().filter(|p| p.0[..3] != [255, 255, 255]).count();
        assert!(
            coloured > (w * h / 50) as usize,
            "{coloured} non-white pixels"
        );
        // Log axes draw too.
        let log = Figure {
            x: Axis {
                label: "n".into(),
                log: true,
            },
            ..f
        };
        assert!(render(&log).is_ok());
    }
}
