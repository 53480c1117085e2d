//! A failover as a picture: who could write (or held) each group when, one row per group, as
//! SVG, with the same facts as text for a terminal.
//!
//! The picture answers the two questions asked first after a failover or a fault campaign: did
//! two hosts ever hold one group at once, and how long was each group without a writer? Each
//! holder's spans get a colour of their own, every stretch of a row that no span covers is a
//! labelled grey gap, and any overlap of two holders is drawn in red on top, so a clean run is
//! visibly clean and a violation cannot hide under another bar.
//!
//! Times are nanoseconds on one clock for the whole picture (the gate logs' CLOCK_BOOTTIME, or
//! Unix milliseconds times 10^6 for the leadership history); the axis shows seconds from the
//! earliest span.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use svg::node::element::{Group, Line, Rectangle, Text, Title};
use svg::Document;

/// One holder's stretch of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub holder: String,
    pub epoch: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A stretch of one group's row that no span covers (a gap) or that two holders' spans both
/// cover (an overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stretch {
    pub group: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// For an overlap, the two holders; empty for a gap.
    pub holders: Vec<String>,
}

impl Stretch {
    pub fn length_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// A moment worth a vertical line across every row ("kill -9 host-a").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub at_ns: u64,
    pub label: String,
}

/// The spans of many groups, and what a span means ("writable, from the hosts' gate logs",
/// "grant held, from LeaseHistory"): the caption says it, so a reader knows what a gap is.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    title: String,
    meaning: String,
    rows: BTreeMap<String, Vec<Span>>,
    marks: Vec<Mark>,
}

/// Colour-blind-safe (Okabe and Ito), with red left out: red means an overlap.
const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#555555",
];
const OVERLAP_RED: &str = "#D7191C";
const WIDTH: f64 = 1100.0;
const LABEL_COLUMN: f64 = 200.0;
const RIGHT_MARGIN: f64 = 30.0;
const TOP: f64 = 90.0;
/// A bar and, above it, room for its gaps' labels.
const ROW: f64 = 34.0;
const BAR: f64 = 16.0;
/// About how wide a character of a 10 px label is, to keep labels apart.
const LABEL_CHAR_WIDTH: f64 = 5.6;

impl Timeline {
    pub fn new(title: impl Into<String>, meaning: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            meaning: meaning.into(),
            rows: BTreeMap::new(),
            marks: Vec::new(),
        }
    }

    /// Adds a vertical line at `at_ns` with a label at the top.
    pub fn mark(&mut self, at_ns: u64, label: impl Into<String>) {
        self.marks.push(Mark {
            at_ns,
            label: label.into(),
        });
        self.marks.sort_by_key(|m| m.at_ns);
    }

    /// Adds a span to a group's row; an empty or inverted span is left out (it covers nothing).
    pub fn add(&mut self, group: impl Into<String>, span: Span) {
        let row = self.rows.entry(group.into()).or_default();
        if span.end_ns > span.start_ns {
            row.push(span);
            row.sort_by_key(|s| (s.start_ns, s.end_ns));
        }
    }

    pub fn group_count(&self) -> usize {
        self.rows.len()
    }

    pub fn span_count(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    /// Per group, the stretches between its first span's start and its last span's end that no
    /// span covers: when nobody could write (or nobody held) the group.
    pub fn gaps(&self) -> Vec<Stretch> {
        let mut out = Vec::new();
        for (group, spans) in &self.rows {
            let mut covered_until: Option<u64> = None;
            for span in spans {
                if let Some(until) = covered_until {
                    if span.start_ns > until {
                        out.push(Stretch {
                            group: group.clone(),
                            start_ns: until,
                            end_ns: span.start_ns,
                            holders: Vec::new(),
                        });
                    }
                }
                covered_until = Some(covered_until.map_or(span.end_ns, |u| u.max(span.end_ns)));
            }
        }
        out
    }

    /// Per group, every stretch two different holders' spans both cover.
    pub fn overlaps(&self) -> Vec<Stretch> {
        let mut out = Vec::new();
        for (group, spans) in &self.rows {
            for (n, a) in spans.iter().enumerate() {
                // Spans are sorted by start: once one starts after `a` ends, none later overlaps.
                for b in spans[n + 1..].iter().take_while(|b| b.start_ns < a.end_ns) {
                    if a.holder != b.holder {
                        out.push(Stretch {
                            group: group.clone(),
                            start_ns: b.start_ns,
                            end_ns: a.end_ns.min(b.end_ns),
                            holders: vec![a.holder.clone(), b.holder.clone()],
                        });
                    }
                }
            }
        }
        out
    }

    /// The earliest and latest time drawn: spans and marks.
    fn origin_and_extent(&self) -> (u64, u64) {
        let spans = self.rows.values().flatten();
        let starts = spans.clone().map(|s| s.start_ns);
        let ends = spans.map(|s| s.end_ns);
        let marks = self.marks.iter().map(|m| m.at_ns);
        let origin = starts.chain(marks.clone()).min().unwrap_or(0);
        let end = ends.chain(marks).max().unwrap_or(origin);
        (origin, end)
    }

    /// Holders in order of first appearance (ties by name), each with its colour: the bars'
    /// colours and the legend's order.
    fn colours(&self) -> Vec<(&str, &'static str)> {
        let mut first_seen: Vec<(&str, u64)> = Vec::new();
        for span in self.rows.values().flatten() {
            match first_seen.iter_mut().find(|(h, _)| *h == span.holder) {
                Some((_, t)) => *t = (*t).min(span.start_ns),
                None => first_seen.push((&span.holder, span.start_ns)),
            }
        }
        first_seen.sort_by_key(|&(h, t)| (t, h));
        first_seen
            .into_iter()
            .enumerate()
            .map(|(n, (h, _))| (h, PALETTE[n % PALETTE.len()]))
            .collect()
    }

    /// One line: groups, spans, overlaps, gaps and the longest gap.
    pub fn headline(&self) -> String {
        let gaps = self.gaps();
        let overlaps = self.overlaps();
        let (origin, _) = self.origin_and_extent();
        let mut line = format!(
            "{} groups, {} spans ({}), {} overlaps, {} gaps",
            self.group_count(),
            self.span_count(),
            self.meaning,
            overlaps.len(),
            gaps.len()
        );
        if let Some(longest) = gaps.iter().max_by_key(|g| g.length_ns()) {
            let _ = write!(
                line,
                ", longest gap {} s ({} at {} s)",
                seconds(longest.length_ns()),
                longest.group,
                seconds(longest.start_ns - origin)
            );
        }
        line
    }

    /// The headline, then one line per group: each span and gap in time order, in seconds from
    /// the earliest span, and every overlap.
    pub fn summary(&self) -> String {
        let (origin, _) = self.origin_and_extent();
        let gaps = self.gaps();
        let overlaps = self.overlaps();
        let width = self.rows.keys().map(String::len).max().unwrap_or(0);
        let mut out = self.headline();
        for mark in &self.marks {
            let _ = write!(
                out,
                "\n  at {} s: {}",
                seconds(mark.at_ns - origin),
                mark.label
            );
        }
        for (group, spans) in &self.rows {
            let mut pieces: Vec<(u64, String)> = spans
                .iter()
                .map(|s| {
                    let text = format!(
                        "{} e{} {}-{} s",
                        s.holder,
                        s.epoch,
                        seconds(s.start_ns - origin),
                        seconds(s.end_ns - origin)
                    );
                    (s.start_ns, text)
                })
                .collect();
            for gap in gaps.iter().filter(|g| &g.group == group) {
                pieces.push((gap.start_ns, format!("gap {} s", seconds(gap.length_ns()))));
            }
            pieces.sort_by_key(|(t, _)| *t);
            let line: Vec<String> = pieces.into_iter().map(|(_, text)| text).collect();
            let _ = write!(out, "\n  {group:<width$}  {}", line.join(" | "));
            for overlap in overlaps.iter().filter(|o| &o.group == group) {
                let _ = write!(
                    out,
                    "\n  {:<width$}  OVERLAP of {} for {} s from {} s",
                    "",
                    overlap.holders.join(" and "),
                    seconds(overlap.length_ns()),
                    seconds(overlap.start_ns - origin)
                );
            }
        }
        out
    }

    /// The picture: a row per group, an axis in seconds, a legend of holders, the headline.
    pub fn to_svg(&self) -> String {
        let (origin, end) = self.origin_and_extent();
        let total_ns = (end - origin).max(1) as f64;
        let plot = WIDTH - LABEL_COLUMN - RIGHT_MARGIN;
        let x = |t: u64| LABEL_COLUMN + (t - origin) as f64 / total_ns * plot;
        let rows_bottom = TOP + ROW * self.rows.len().max(1) as f64;
        let colours = self.colours();
        let height = rows_bottom + 30.0 + 22.0 * (colours.len().div_ceil(5) as f64) + 40.0;
        let overlaps = self.overlaps();

        let mut doc = Document::new()
            .set("viewBox", (0, 0, WIDTH, height))
            .set("width", WIDTH)
            .set("height", height)
            .set("font-family", "sans-serif")
            .set("font-size", 12)
            .add(
                Rectangle::new()
                    .set("width", "100%")
                    .set("height", "100%")
                    .set("fill", "white"),
            )
            .add(
                Text::new(self.title.clone())
                    .set("x", 12)
                    .set("y", 24)
                    .set("font-size", 16)
                    .set("font-weight", "bold"),
            )
            .add(
                Text::new(self.headline())
                    .set("x", 12)
                    .set("y", 44)
                    .set("class", "headline")
                    .set(
                        "fill",
                        if overlaps.is_empty() {
                            "#333"
                        } else {
                            OVERLAP_RED
                        },
                    ),
            );

        // The axis: a tick every `step` seconds, its line through every row.
        let step_ns = tick_step_ns(end - origin);
        let mut axis = Group::new().set("class", "axis");
        let mut tick = 0u64;
        while tick <= end - origin {
            let at = x(origin + tick);
            axis = axis
                .add(
                    Line::new()
                        .set("x1", at)
                        .set("x2", at)
                        .set("y1", TOP - 22.0)
                        .set("y2", rows_bottom)
                        .set("stroke", "#ddd"),
                )
                .add(
                    Text::new(tick_label(tick))
                        .set("x", at)
                        .set("y", TOP - 26.0)
                        .set("text-anchor", "middle")
                        .set("fill", "#666")
                        .set("font-size", 10),
                );
            tick += step_ns;
        }
        doc = doc.add(axis);

        for mark in &self.marks {
            let at = x(mark.at_ns);
            doc = doc.add(
                Group::new()
                    .set("class", "mark")
                    .add(
                        Line::new()
                            .set("x1", at)
                            .set("x2", at)
                            .set("y1", TOP - 14.0)
                            .set("y2", rows_bottom)
                            .set("stroke", "#222")
                            .set("stroke-dasharray", "5 3"),
                    )
                    .add(
                        Text::new(mark.label.clone())
                            .set("x", at + 3.0)
                            .set("y", TOP - 6.0)
                            .set("font-size", 11)
                            .set("font-weight", "bold"),
                    ),
            );
        }

        let gaps = self.gaps();
        for (row, (group, spans)) in self.rows.iter().enumerate() {
            let top = TOP + ROW * row as f64;
            let bar_top = top + ROW - BAR - 4.0;
            let mut g = Group::new().set("class", "row").add(
                Text::new(group.clone())
                    .set("x", LABEL_COLUMN - 8.0)
                    .set("y", bar_top + BAR - 4.0)
                    .set("text-anchor", "end"),
            );
            // Right edge of the last gap label drawn in this row: a label that would run into
            // it is left out (the gap keeps its tooltip, and the summary lists every gap).
            let mut labels_end = f64::MIN;
            for gap in gaps.iter().filter(|gap| &gap.group == group) {
                let (from, to) = (x(gap.start_ns), x(gap.end_ns));
                let label = format!("gap {} s", seconds(gap.length_ns()));
                let half_width = LABEL_CHAR_WIDTH * label.len() as f64 / 2.0;
                let centre = (from + to) / 2.0;
                g = g.add(
                    Rectangle::new()
                        .set("class", "gap")
                        .set("x", from)
                        .set("y", bar_top)
                        .set("width", (to - from).max(1.0))
                        .set("height", BAR)
                        .set("fill", "#e6e6e6")
                        .set("stroke", "#999")
                        .set("stroke-dasharray", "3 2")
                        .add(Title::new(format!(
                            "{group}: no holder for {} s, from {} s",
                            seconds(gap.length_ns()),
                            seconds(gap.start_ns - origin)
                        ))),
                );
                if centre - half_width > labels_end + 4.0 {
                    labels_end = centre + half_width;
                    g = g.add(
                        Text::new(label)
                            .set("class", "gap-label")
                            .set("x", centre)
                            .set("y", bar_top - 3.0)
                            .set("text-anchor", "middle")
                            .set("font-size", 10)
                            .set("fill", "#444"),
                    );
                }
            }
            for span in spans {
                let (from, to) = (x(span.start_ns), x(span.end_ns));
                let label = format!("{} e{}", span.holder, span.epoch);
                g = g.add(
                    Rectangle::new()
                        .set("class", "span")
                        .set("x", from)
                        .set("y", bar_top)
                        .set("width", (to - from).max(1.0))
                        .set("height", BAR)
                        .set(
                            "fill",
                            colours
                                .iter()
                                .find(|(h, _)| *h == span.holder)
                                .map_or("#000", |(_, c)| *c),
                        )
                        .set("fill-opacity", 0.85)
                        .add(Title::new(format!(
                            "{group}: {} at epoch {}, {}-{} s ({} s)",
                            span.holder,
                            span.epoch,
                            seconds(span.start_ns - origin),
                            seconds(span.end_ns - origin),
                            seconds(span.end_ns - span.start_ns)
                        ))),
                );
                if to - from >= 7.0 * label.len() as f64 {
                    g = g.add(
                        Text::new(label)
                            .set("x", from + 4.0)
                            .set("y", bar_top + BAR - 4.0)
                            .set("font-size", 10)
                            .set("fill", "white"),
                    );
                }
            }
            for overlap in overlaps.iter().filter(|o| &o.group == group) {
                let (from, to) = (x(overlap.start_ns), x(overlap.end_ns));
                g = g.add(
                    Rectangle::new()
                        .set("class", "overlap")
                        .set("x", from)
                        .set("y", bar_top - 3.0)
                        .set("width", (to - from).max(2.0))
                        .set("height", BAR + 6.0)
                        .set("fill", OVERLAP_RED)
                        .add(Title::new(format!(
                            "{group}: OVERLAP of {} for {} s from {} s",
                            overlap.holders.join(" and "),
                            seconds(overlap.length_ns()),
                            seconds(overlap.start_ns - origin)
                        ))),
                );
            }
            doc = doc.add(g);
        }
        if self.rows.is_empty() {
            doc = doc.add(
                Text::new("no spans to draw")
                    .set("x", LABEL_COLUMN)
                    .set("y", TOP + ROW / 2.0)
                    .set("fill", "#666"),
            );
        }

        // Legend: holders in order of first appearance, then what grey and red mean.
        let mut legend = Group::new().set("class", "legend");
        for (n, (holder, colour)) in colours.iter().enumerate() {
            let left = 12.0 + 215.0 * (n % 5) as f64;
            let top = rows_bottom + 20.0 + 22.0 * (n / 5) as f64;
            legend = legend
                .add(
                    Rectangle::new()
                        .set("x", left)
                        .set("y", top)
                        .set("width", 14)
                        .set("height", 14)
                        .set("fill", *colour),
                )
                .add(
                    Text::new(holder.to_string())
                        .set("x", left + 20.0)
                        .set("y", top + 12.0),
                );
        }
        let note_y = rows_bottom + 30.0 + 22.0 * (colours.len().div_ceil(5) as f64) + 10.0;
        legend = legend.add(
            Text::new(format!(
                "A bar: {}. Grey dashed: nobody. Red: two holders at once (must never happen).",
                self.meaning
            ))
            .set("x", 12)
            .set("y", note_y)
            .set("fill", "#444"),
        );
        doc.add(legend).to_string()
    }
}

/// A round tick step giving at most about a dozen ticks.
fn tick_step_ns(extent_ns: u64) -> u64 {
    const STEPS_MS: [u64; 15] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
    ];
    let extent_ms = extent_ns / 1_000_000;
    let step_ms = STEPS_MS
        .iter()
        .copied()
        .find(|s| extent_ms / s <= 12)
        .unwrap_or_else(|| (extent_ms / 12).div_ceil(60_000) * 60_000);
    step_ms.max(1) * 1_000_000
}

/// An axis label: `0 s`, `2.5 s`, `0.05 s`.
fn tick_label(ns: u64) -> String {
    let text = seconds(ns);
    format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Nanoseconds as seconds with millisecond precision: `12.301`.
fn seconds(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000_000, ns / 1_000_000 % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn span(holder: &str, epoch: u64, from_s: u64, to_s: u64) -> Span {
        Span {
            holder: holder.into(),
            epoch,
            start_ns: from_s * S,
            end_ns: to_s * S,
        }
    }

    fn failover() -> Timeline {
        let mut t = Timeline::new("failover", "writable");
        t.add("g1", span("a", 1, 0, 10));
        t.add("g1", span("b", 2, 21, 30));
        t.add("g2", span("a", 4, 0, 10));
        t.add("g2", span("b", 5, 20, 25));
        t.add("g2", span("c", 6, 25, 30));
        t
    }

    fn count(svg: &str, class: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).expect("the picture is well-formed XML");
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    }

    #[test]
    fn gaps_are_the_stretches_of_a_row_nobody_held_and_a_handover_at_one_instant_is_none() {
        let gaps = failover().gaps();
        assert_eq!(
            gaps.iter()
                .map(|g| (g.group.as_str(), g.start_ns / S, g.end_ns / S))
                .collect::<Vec<_>>(),
            vec![("g1", 10, 21), ("g2", 10, 20)]
        );
        assert!(failover().overlaps().is_empty());
    }

    #[test]
    fn overlaps_are_between_different_holders_only() {
        let mut t = failover();
        t.add("g1", span("a", 1, 9, 12)); // a again: its own spans may touch
        assert!(t.overlaps().is_empty());
        t.add("g1", span("c", 3, 25, 26));
        let found = t.overlaps();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].holders, vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!((found[0].start_ns / S, found[0].end_ns / S), (25, 26));
    }

    #[test]
    fn the_picture_draws_every_span_gap_and_overlap_and_says_so_in_the_headline() {
        let clean = failover().to_svg();
        assert_eq!(count(&clean, "span"), 5);
        assert_eq!(count(&clean, "gap"), 2);
        assert_eq!(count(&clean, "overlap"), 0);
        assert_eq!(count(&clean, "row"), 2);
        assert!(clean.contains("0 overlaps, 2 gaps, longest gap 11.000 s (g1 at 10.000 s)"));
        let mut broken = failover();
        broken.add("g2", span("c", 7, 22, 24));
        let svg = broken.to_svg();
        assert_eq!(count(&svg, "overlap"), 1);
        assert!(svg.contains(OVERLAP_RED) && svg.contains("1 overlaps"));
    }

    #[test]
    fn the_summary_lists_each_group_in_time_order() {
        let text = failover().summary();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[1],
            "  g1  a e1 0.000-10.000 s | gap 11.000 s | b e2 21.000-30.000 s"
        );
        assert_eq!(
            lines[2],
            "  g2  a e4 0.000-10.000 s | gap 10.000 s | b e5 20.000-25.000 s | c e6 25.000-30.000 s"
        );
    }

    #[test]
    fn names_are_escaped_and_an_empty_timeline_is_still_a_picture() {
        let mut t = Timeline::new("<t&>", "writable");
        t.add("g<&>\"", span("h<1>", 1, 0, 1));
        let svg = t.to_svg();
        assert_eq!(count(&svg, "span"), 1);
        assert!(svg.contains("g&lt;&amp;&gt;"));
        let empty = Timeline::new("nothing", "writable").to_svg();
        assert_eq!(count(&empty, "span"), 0);
        assert!(empty.contains("no spans to draw"));
    }

    #[test]
    fn gap_labels_too_close_to_the_previous_one_are_left_out() {
        let mut t = Timeline::new("t", "writable");
        t.add("g", span("a", 1, 0, 100));
        t.add("g", span("b", 2, 101, 102));
        t.add("g", span("c", 3, 103, 200));
        t.add("g", span("d", 4, 150, 160)); // inside c: no gap
        let svg = t.to_svg();
        assert_eq!(count(&svg, "gap"), 2);
        assert_eq!(
            count(&svg, "gap-label"),
            1,
            "two labels 2 px apart would overlap"
        );
        assert_eq!(count(&failover().to_svg(), "gap-label"), 2);
    }

    #[test]
    fn marks_draw_a_line_and_widen_the_picture_to_include_them() {
        let mut t = failover();
        t.mark(40 * S, "kill -9 a");
        let svg = t.to_svg();
        assert_eq!(count(&svg, "mark"), 1);
        assert!(svg.contains("kill -9 a"));
        assert!(t.summary().lines().nth(1) == Some("  at 40.000 s: kill -9 a"));
        assert_eq!(tick_label(0), "0 s");
        assert_eq!(tick_label(2_500_000_000), "2.5 s");
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step_ns(30 * S), 5 * S);
        assert_eq!(tick_step_ns(S / 2), 50_000_000);
        assert_eq!(tick_step_ns(0), 1_000_000);
        assert!((3_600 * S) / tick_step_ns(3_600 * S) <= 12);
    }

    proptest! {
        /// Gaps and spans together cover each row's extent exactly, no gap touches a span, and
        /// the picture is always well-formed.
        #[test]
        fn gaps_and_spans_tile_each_row(
            spans in proptest::collection::vec((0u8..3, 0u64..1_000, 1u64..200), 1..12)
        ) {
            let mut t = Timeline::new("p", "writable");
            for (n, (holder, start, length)) in spans.iter().enumerate() {
                t.add("g", Span {
                    holder: format!("h{holder}"),
                    epoch: n as u64,
                    start_ns: *start,
                    end_ns: start + length,
                });
            }
            let row = &t.rows["g"];
            let (first, last) = (
                row.iter().map(|s| s.start_ns).min().unwrap(),
                row.iter().map(|s| s.end_ns).max().unwrap(),
            );
            let gaps = t.gaps();
            for point in first..last {
                let covered = row.iter().any(|s| s.start_ns <= point && point < s.end_ns);
                let in_gap = gaps.iter().any(|g| g.start_ns <= point && point < g.end_ns);
                prop_assert!(covered != in_gap, "point {point}: covered {covered}, gap {in_gap}");
            }
            prop_assert!(roxmltree::Document::parse(&t.to_svg()).is_ok());
        }
    }
}
