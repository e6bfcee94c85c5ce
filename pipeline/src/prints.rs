//! The print-status machine and the one rule for what counts as a print,
//! in one place for every route that reads or moves a token's print.
//!
//! A print starts with `WARMING_UP` (from no print yet, or after an
//! earlier print ended), goes through `PRINTING` to `SUCCESS` or
//! `FAILURE`, and may then be confirmed. Only a start counts against a
//! token's `print_limit`. A printer is told apart by the id it sends
//! (`X-Printer-Id`): while a print is in progress, its own printer may
//! pull the stream again and report from where it is (a restart resumes
//! the same print and uses nothing up), and any other printer is refused.
//! A print whose printer sent no id can be resumed by anyone, since there
//! is nothing to tell printers apart by.

use serde::Serialize;

use crate::db::PrintToken;

/// A print's status, as printers report it (seed 001's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrintStatus {
    /// Started: the printer is heating up.
    WarmingUp,
    /// Printing layers.
    Printing,
    /// The printer says it finished.
    Success,
    /// The printer says it failed.
    Failure,
    /// The owner confirmed the success.
    ConfirmedSuccess,
    /// The owner confirmed a failure.
    ConfirmedFailure,
}

impl PrintStatus {
    /// Every status, in the seed's order.
    pub const ALL: [PrintStatus; 6] = [
        PrintStatus::WarmingUp,
        PrintStatus::Printing,
        PrintStatus::Failure,
        PrintStatus::Success,
        PrintStatus::ConfirmedSuccess,
        PrintStatus::ConfirmedFailure,
    ];

    /// The seed's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PrintStatus::WarmingUp => "WARMING_UP",
            PrintStatus::Printing => "PRINTING",
            PrintStatus::Success => "SUCCESS",
            PrintStatus::Failure => "FAILURE",
            PrintStatus::ConfirmedSuccess => "CONFIRMED_SUCCESS",
            PrintStatus::ConfirmedFailure => "CONFIRMED_FAILURE",
        }
    }

    /// A status by its seed name.
    pub fn parse(s: &str) -> Option<PrintStatus> {
        PrintStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The words people see.
    pub fn label(self) -> &'static str {
        match self {
            PrintStatus::WarmingUp => "Warming up",
            PrintStatus::Printing => "Printing",
            PrintStatus::Success => "Success",
            PrintStatus::Failure => "Failure",
            PrintStatus::ConfirmedSuccess => "Confirmed success",
            PrintStatus::ConfirmedFailure => "Confirmed failure",
        }
    }

    /// Whether a print in this status is still going.
    pub fn in_progress(self) -> bool {
        matches!(self, PrintStatus::WarmingUp | PrintStatus::Printing)
    }

    /// Which statuses may follow `from` (`None`: no print yet). Repeating
    /// a status is a progress update; `WARMING_UP` after an ended print
    /// starts the next one.
    pub fn allowed_next(from: Option<PrintStatus>) -> &'static [PrintStatus] {
        use PrintStatus::*;
        match from {
            None => &[WarmingUp],
            Some(WarmingUp) => &[WarmingUp, Printing, Failure],
            Some(Printing) => &[Printing, Success, Failure],
            Some(Success) => &[ConfirmedSuccess, ConfirmedFailure, WarmingUp],
            Some(Failure) => &[ConfirmedFailure, WarmingUp],
            Some(ConfirmedSuccess | ConfirmedFailure) => &[WarmingUp],
        }
    }
}

/// Why a printer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrintRefusal {
    /// Every print the token allows has been started.
    #[error("this token allows {0} print(s), and they have been started")]
    LimitReached(i64),
    /// Another printer's print is in progress.
    #[error("another printer is printing this token")]
    OtherPrinter,
    /// The status cannot follow the current one.
    #[error("cannot go from {from} to {to}")]
    IllegalTransition {
        /// The current status (`none` before any print).
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
}

impl PrintRefusal {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            PrintRefusal::LimitReached(_) => "print_limit_reached",
            PrintRefusal::OtherPrinter => "print_in_progress",
            PrintRefusal::IllegalTransition { .. } => "illegal_transition",
        }
    }
}

/// The token's current status.
pub fn current(t: &PrintToken) -> Option<PrintStatus> {
    t.printing_job_status.as_deref().and_then(PrintStatus::parse)
}

/// Whether `printer` is the printer of `t`'s print in progress (or one
/// that cannot be told apart from it).
fn holds_print(t: &PrintToken, printer: Option<&str>) -> bool {
    current(t).is_some_and(PrintStatus::in_progress)
        && match (t.printer_id.as_deref(), printer) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        }
}

fn limit_reached(t: &PrintToken) -> Option<i64> {
    t.print_limit.filter(|&limit| t.prints_started >= limit)
}

/// Whether `printer` may pull `t`'s stream: the printer of the print in
/// progress always may (it is resuming); anyone else only while the token
/// has prints left to start, and not while another printer prints it.
pub fn may_pull(t: &PrintToken, printer: Option<&str>) -> Result<(), PrintRefusal> {
    if holds_print(t, printer) {
        return Ok(());
    }
    if current(t).is_some_and(PrintStatus::in_progress) {
        return Err(PrintRefusal::OtherPrinter);
    }
    match limit_reached(t) {
        Some(limit) => Err(PrintRefusal::LimitReached(limit)),
        None => Ok(()),
    }
}

/// Checks a report of `next` by `printer` on `t`: whether it starts a new
/// print (`Ok(true)`, to be counted), continues the current one
/// (`Ok(false)`), or is refused.
pub fn report(t: &PrintToken, next: PrintStatus, printer: Option<&str>) -> Result<bool, PrintRefusal> {
    let from = current(t);
    if from.is_some_and(PrintStatus::in_progress) && !holds_print(t, printer) {
        return Err(PrintRefusal::OtherPrinter);
    }
    if !PrintStatus::allowed_next(from).contains(&next) {
        return Err(PrintRefusal::IllegalTransition {
            from: from.map_or("none", PrintStatus::as_str),
            to: next.as_str(),
        });
    }
    let starts = next == PrintStatus::WarmingUp && !from.is_some_and(PrintStatus::in_progress);
    if starts && let Some(limit) = limit_reached(t) {
        return Err(PrintRefusal::LimitReached(limit));
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(limit: Option<i64>) -> PrintToken {
        PrintToken { print_limit: limit, ..PrintToken::new("t".into(), "p".into(), Some("m".into()), 0) }
    }

    /// `t` after `printer` reported `s` (as the database records it).
    fn after(mut t: PrintToken, s: PrintStatus, printer: Option<&str>) -> PrintToken {
        if report(&t, s, printer).expect("allowed") {
            t.prints_started += 1;
            t.printer_id = printer.map(str::to_string);
        }
        t.printing_job_status = Some(s.as_str().into());
        t
    }

    #[test]
    fn a_printer_resuming_its_print_uses_nothing_up_and_a_second_printer_is_refused() {
        use PrintStatus::*;
        let t = token(Some(1));
        assert_eq!(may_pull(&t, Some("a")), Ok(()));
        let t = after(t, WarmingUp, Some("a"));
        assert_eq!(t.prints_started, 1);
        // Printer a restarts: it pulls again and warms up again, for free.
        assert_eq!(may_pull(&t, Some("a")), Ok(()));
        assert_eq!(report(&t, WarmingUp, Some("a")), Ok(false));
        let t = after(t, Printing, Some("a"));
        assert_eq!(may_pull(&t, Some("a")), Ok(()));
        // Printer b, or a printer that gives no id, is refused meanwhile.
        assert_eq!(may_pull(&t, Some("b")), Err(PrintRefusal::OtherPrinter));
        assert_eq!(may_pull(&t, None), Err(PrintRefusal::OtherPrinter));
        assert_eq!(report(&t, WarmingUp, Some("b")), Err(PrintRefusal::OtherPrinter));
        assert_eq!(report(&t, Success, Some("b")), Err(PrintRefusal::OtherPrinter));
        // Once it ended, the one print is used up for everyone.
        let t = after(t, Success, Some("a"));
        assert_eq!(may_pull(&t, Some("b")), Err(PrintRefusal::LimitReached(1)));
        assert_eq!(may_pull(&t, Some("a")), Err(PrintRefusal::LimitReached(1)));
        assert_eq!(report(&t, WarmingUp, Some("a")), Err(PrintRefusal::LimitReached(1)));
        assert_eq!(report(&t, ConfirmedSuccess, None), Ok(false));
    }

    #[test]
    fn prints_without_ids_resume_and_unlimited_tokens_print_again() {
        use PrintStatus::*;
        let t = after(token(None), WarmingUp, None);
        assert_eq!(may_pull(&t, None), Ok(()));
        assert_eq!(may_pull(&t, Some("x")), Ok(()), "nothing tells them apart");
        let t = after(after(t, Printing, None), Failure, None);
        let t = after(t, WarmingUp, Some("b"));
        assert_eq!((t.prints_started, t.printer_id.as_deref()), (2, Some("b")));
        assert!(matches!(report(&t, Success, Some("b")), Err(PrintRefusal::IllegalTransition { .. })));
    }

    #[test]
    fn names_round_trip() {
        for s in PrintStatus::ALL {
            assert_eq!(PrintStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PrintStatus::parse("printing"), None);
    }
}
