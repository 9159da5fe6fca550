//! The verdict of one cell from its trigger and expectations.

use super::Expectation;
use crate::verdict::{Check, Observations, Outcome};

fn check(e: &Expectation, obs: &Observations) -> Check {
    let (ok, detail) = match e.eval(obs) {
        Ok(r) => r,
        Err(err) => (false, err.to_string()),
    };
    Check {
        expr: e.source().to_owned(),
        ok,
        detail,
    }
}

fn describe(c: &Check) -> String {
    if c.detail.is_empty() {
        c.expr.clone()
    } else {
        format!("{} ({})", c.expr, c.detail)
    }
}

/// Inconclusive when the trigger is false or cannot be evaluated; otherwise Fail when
/// any expectation is false or cannot be evaluated; otherwise Pass. Every expectation
/// is evaluated in all cases, as evidence.
pub fn judge_cell(
    trigger: Option<&Expectation>,
    expects: &[Expectation],
    obs: &Observations,
) -> (Outcome, Option<String>, Option<Check>, Vec<Check>) {
    let trigger = trigger.map(|t| check(t, obs));
    let checks: Vec<Check> = expects.iter().map(|e| check(e, obs)).collect();

    if let Some(t) = trigger.as_ref().filter(|t| !t.ok) {
        let reason = format!("trigger not proven: {}", describe(t));
        return (Outcome::Inconclusive, Some(reason), trigger, checks);
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    match failed.first() {
        None => (Outcome::Pass, None, trigger, checks),
        Some(first) => {
            let mut reason = format!("expected {}", describe(first));
            if failed.len() > 1 {
                reason.push_str(&format!(" (+{} more failed)", failed.len() - 1));
            }
            (Outcome::Fail, Some(reason), trigger, checks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Expectation {
        Expectation::parse(s).unwrap()
    }

    fn obs() -> Observations {
        [
            ("received", 0.0),
            ("sent", 20.0),
            ("conntrack.sw.drop", 3.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
    }

    #[test]
    fn pass() {
        let (outcome, reason, trigger, checks) = judge_cell(
            Some(&e("conntrack.sw.drop > 0")),
            &[e("received == 0")],
            &obs(),
        );
        assert_eq!(outcome, Outcome::Pass);
        assert_eq!(reason, None);
        assert_eq!(trigger.unwrap().detail, "conntrack.sw.drop=3");
        assert_eq!(
            checks,
            [Check {
                expr: "received == 0".into(),
                ok: true,
                detail: "received=0".into()
            }]
        );
    }

    #[test]
    fn fail_names_the_first_failed_check() {
        let (outcome, reason, trigger, checks) = judge_cell(
            None,
            &[e("received == sent"), e("received > 0"), e("nope > 1")],
            &obs(),
        );
        assert_eq!(outcome, Outcome::Fail);
        assert_eq!(
            reason.unwrap(),
            "expected received == sent (received=0 sent=20) (+2 more failed)"
        );
        assert!(trigger.is_none());
        assert_eq!(checks.len(), 3);
        assert!(checks[2].detail.starts_with("no observation named `nope`"));
    }

    #[test]
    fn unproven_trigger_is_inconclusive_even_if_expectations_fail() {
        let (outcome, reason, trigger, checks) = judge_cell(
            Some(&e("conntrack.sw.drop > 5")),
            &[e("received == sent")],
            &obs(),
        );
        assert_eq!(outcome, Outcome::Inconclusive);
        assert_eq!(
            reason.unwrap(),
            "trigger not proven: conntrack.sw.drop > 5 (conntrack.sw.drop=3)"
        );
        assert!(!trigger.unwrap().ok);
        assert!(!checks[0].ok);
    }

    #[test]
    fn erroring_trigger_is_inconclusive() {
        let (outcome, reason, _, _) = judge_cell(Some(&e("sum(x.*) > 0")), &[], &obs());
        assert_eq!(outcome, Outcome::Inconclusive);
        assert!(reason
            .unwrap()
            .starts_with("trigger not proven: sum(x.*) > 0 (no observation matches"));
    }
}
