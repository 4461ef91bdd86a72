//! Undoing what was made, newest first: the same path for a normal stop and
//! for the rollback after a failed step.

use std::future::Future;
use std::time::{Duration, Instant};

/// One undone thing: what it was, how long undoing it took, how it went.
#[derive(Debug)]
pub struct Undone<E> {
    /// What was undone (for the report).
    pub what: String,
    /// How long it took.
    pub took: Duration,
    /// Whether it worked.
    pub result: Result<(), E>,
}

/// Undoes `made` (in creation order) newest first with `undo`, which says
/// what it undid and how that went. Every item is undone even after a
/// failure, since each failure would otherwise leak everything older;
/// `report` sees each step as it ends.
pub async fn unwind<R, E, F, Fut>(
    mut made: Vec<R>,
    mut undo: F,
    mut report: impl FnMut(&Undone<E>),
) -> Vec<Undone<E>>
where
    F: FnMut(R) -> Fut,
    Fut: Future<Output = (String, Result<(), E>)>,
{
    let mut steps = Vec::with_capacity(made.len());
    while let Some(item) = made.pop() {
        let started = Instant::now();
        let (what, result) = undo(item).await;
        let step = Undone {
            what,
            took: started.elapsed(),
            result,
        };
        report(&step);
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[tokio::test]
    async fn newest_first_and_past_failures() {
        let order = Rc::new(RefCell::new(Vec::new()));
        let made = vec!["state dir", "netns", "tap", "virtiofsd", "vm"];
        let log = order.clone();
        let reported = RefCell::new(Vec::new());
        let steps = unwind(
            made,
            move |item: &'static str| {
                let log = log.clone();
                async move {
                    log.borrow_mut().push(item);
                    let result = if item == "tap" { Err("busy") } else { Ok(()) };
                    (item.to_string(), result)
                }
            },
            |step| reported.borrow_mut().push(step.what.clone()),
        )
        .await;
        assert_eq!(
            *order.borrow(),
            ["vm", "virtiofsd", "tap", "netns", "state dir"]
        );
        assert_eq!(*reported.borrow(), *order.borrow());
        let failed: Vec<&str> = steps
            .iter()
            .filter(|s| s.result.is_err())
            .map(|s| s.what.as_str())
            .collect();
        assert_eq!(failed, ["tap"]);
    }

    #[tokio::test]
    async fn nothing_made_nothing_undone() {
        let steps = unwind(
            Vec::<u8>::new(),
            |_| async { (String::new(), Ok::<(), ()>(())) },
            |_| panic!("nothing to report"),
        )
        .await;
        assert!(steps.is_empty());
    }
}
