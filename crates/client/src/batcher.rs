//! The background task: groups events into batches and keeps up to `concurrency` of them in
//! flight, answering flushes once every batch before them is answered.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Shared;
use crate::deliver;

/// An event taken by `send`, as it will be posted.
pub(crate) struct Pending {
    pub(crate) seq: u64,
    pub(crate) id: Uuid,
    pub(crate) json: String,
}

pub(crate) enum Command {
    Event(Pending),
    Flush(oneshot::Sender<()>),
}

struct Batches {
    shared: Arc<Shared>,
    current: Vec<Pending>,
    current_bytes: usize,
    /// When the current batch goes even if not full.
    deadline: Option<Instant>,
    ready: VecDeque<(u64, Vec<Pending>)>,
    next_batch: u64,
    /// Batches sealed but not yet answered, by number.
    unanswered: BTreeSet<u64>,
    in_flight: JoinSet<()>,
    tasks: HashMap<tokio::task::Id, (u64, usize)>,
    /// Flushes waiting for every batch numbered below theirs.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
}

pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut batches = Batches {
        shared,
        current: Vec::new(),
        current_bytes: 0,
        deadline: None,
        ready: VecDeque::new(),
        next_batch: 0,
        unanswered: BTreeSet::new(),
        in_flight: JoinSet::new(),
        tasks: HashMap::new(),
        flushes: Vec::new(),
    };
    let mut open = true;
    loop {
        batches.dispatch();
        batches.answer_flushes();
        if !open && batches.unanswered.is_empty() && batches.current.is_empty() {
            return;
        }
        let deadline = batches.deadline;
        tokio::select! {
            command = rx.recv(), if open => match command {
                Some(Command::Event(event)) => batches.push(event),
                Some(Command::Flush(done)) => {
                    batches.seal();
                    batches.flushes.push((batches.next_batch, done));
                }
                None => {
                    open = false;
                    batches.seal();
                }
            },
            Some(joined) = batches.in_flight.join_next_with_id(), if !batches.in_flight.is_empty() => {
                let id = match &joined {
                    Ok((id, ())) => *id,
                    Err(e) => {
                        tracing::error!(error = %e, "a batch delivery failed");
                        e.id()
                    }
                };
                if let Some((number, events)) = batches.tasks.remove(&id) {
                    batches.unanswered.remove(&number);
                    batches.shared.buffer.add_permits(events);
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => batches.seal(),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

impl Batches {
    fn push(&mut self, event: Pending) {
        // +1 for the comma between events.
        let bytes = event.json.len() + 1;
        if !self.current.is_empty()
            && self.current_bytes + bytes > self.shared.options.max_batch_bytes
        {
            self.seal();
        }
        if self.current.is_empty() {
            self.deadline = Some(Instant::now() + self.shared.options.linger);
        }
        self.current_bytes += bytes;
        self.current.push(event);
        if self.current.len() >= self.shared.options.max_batch_events {
            self.seal();
        }
    }

    /// Closes the current batch: it is sent as soon as a request slot is free.
    fn seal(&mut self) {
        self.deadline = None;
        if self.current.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.current);
        self.current_bytes = 0;
        let number = self.next_batch;
        self.next_batch += 1;
        self.unanswered.insert(number);
        self.ready.push_back((number, batch));
    }

    fn dispatch(&mut self) {
        while self.in_flight.len() < self.shared.options.concurrency {
            let Some((number, batch)) = self.ready.pop_front() else {
                return;
            };
            let events = batch.len();
            let shared = self.shared.clone();
            let task = self
                .in_flight
                .spawn(async move { deliver::deliver(&shared, batch).await });
            self.tasks.insert(task.id(), (number, events));
        }
    }

    fn answer_flushes(&mut self) {
        let oldest = self.unanswered.first().copied().unwrap_or(self.next_batch);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(before, _)| oldest >= *before);
        self.flushes = waiting;
        for (_, flush) in done {
            let _ = flush.send(());
        }
    }
}
