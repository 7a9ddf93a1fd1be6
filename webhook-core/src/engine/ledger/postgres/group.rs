//! Group commit on the shared ledger (decision 16). The steps that wait at the same moment
//! are served together: their reads in one statement, and their guarded writes in one
//! statement that commits once. Each write keeps its own guard, so a step whose read no
//! longer holds writes nothing and decides again on its own, as it would alone.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::client;
use super::step::{self, Ask, Job, Known, Param, Read, WRITE, Written};
use crate::engine::ledger::StoreError;

/// Connections that write groups, and connections that read them, each one group at a
/// time: while one waits for the server (a write for its commit to reach the disk), the
/// next group gathers behind it. One writer (decision 19): the server flushes the WAL for
/// one commit at a time anyway, and two writers' commits seldom shared a flush, so a second
/// writer only halved the groups.
pub(super) const WRITERS: usize = 1;
pub(super) const READERS: usize = 2;

/// The most steps one statement takes.
const MAX_GROUP: usize = 256;

type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

/// The requests waiting, shared by the workers of one queue.
type Waiting<I, O> = Arc<Mutex<mpsc::UnboundedReceiver<(I, Answer<O>)>>>;

/// Where steps hand their reads and their writes.
pub(super) struct Group {
    reads: Queue<Ask, Read>,
    writes: Queue<Job, Option<Written>>,
    /// The rows this replica's claims left, for the steps that record their results.
    pub known: Known,
}

impl Group {
    /// Starts the readers and writers; they connect with their first group and stop when
    /// this is dropped.
    pub(super) fn start(pool: &Pool) -> Self {
        Self {
            reads: Queue::start(pool, READERS, |c, group| Box::pin(read(c, group))),
            writes: Queue::start(pool, WRITERS, |c, group| Box::pin(commit(c, group))),
            known: Known::default(),
        }
    }

    /// Reads what `ask` asks for, with the reads waiting with it.
    pub(super) async fn read(&self, ask: Ask) -> Result<Read, StoreError> {
        self.reads.ask(ask).await
    }

    /// Writes `job` with the steps waiting with it: how it left the row once it is
    /// committed, `None` if what it read had changed (nothing of it is written).
    pub(super) async fn write(&self, job: Job) -> Result<Option<Written>, StoreError> {
        self.writes.ask(job).await
    }
}

/// What serves one group on a connection, answering each of its members.
type Serve<I, O> =
    for<'c> fn(&'c Object, Vec<(I, Answer<O>)>) -> Pin<Box<dyn Future<Output = ()> + Send + 'c>>;

/// Requests waiting for a group, and the workers that take them.
struct Queue<I, O> {
    queue: mpsc::UnboundedSender<(I, Answer<O>)>,
}

impl<I: Send + 'static, O: Send + 'static> Queue<I, O> {
    fn start(pool: &Pool, workers: usize, serve: Serve<I, O>) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting: Waiting<I, O> = Arc::new(Mutex::new(waiting));
        for _ in 0..workers {
            tokio::spawn(worker(pool.clone(), waiting.clone(), serve));
        }
        Self { queue }
    }

    async fn ask(&self, request: I) -> Result<O, StoreError> {
        let stopped = || StoreError("ledger (PostgreSQL): the ledger's connections stopped".into());
        let (answer, answered) = oneshot::channel();
        self.queue.send((request, answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes everything waiting (up to [`MAX_GROUP`]) and serves it as one group on a
/// connection of its own, until the queue closes.
async fn worker<I, O>(pool: Pool, waiting: Waiting<I, O>, serve: Serve<I, O>) {
    let mut connection: Option<Object> = None;
    loop {
        let group = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match waiting.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            group
        };
        if connection.as_ref().is_none_or(|c| c.is_closed()) {
            connection = match connect(&pool).await {
                Ok(c) => Some(c),
                Err(e) => {
                    for (_, answer) in group {
                        let _ = answer.send(Err(StoreError(e.0.clone())));
                    }
                    continue;
                }
            };
        }
        serve(connection.as_ref().expect("connected above"), group).await;
    }
}

/// A connection of the worker's own for as long as it works (taken from the pool, and
/// counted in its size). Its statements take arrays of any length, and the server would
/// plan them anew for each run to fit the lengths it is given (a quarter of a
/// millisecond each time): it keeps one plan for each instead.
async fn connect(pool: &Pool) -> Result<Object, StoreError> {
    let c = client(pool).await?;
    c.batch_execute("SET plan_cache_mode = force_generic_plan")
        .await?;
    Ok(c)
}

/// Reads what `group` asks for in one statement, one snapshot for all.
async fn read(c: &Object, group: Vec<(Ask, Answer<Read>)>) {
    let (asks, answers): (Vec<Ask>, Vec<Answer<Read>>) = group.into_iter().unzip();
    match step::read(c, &asks.iter().collect::<Vec<_>>()).await {
        Ok(reads) => {
            for (answer, read) in answers.into_iter().zip(reads) {
                let _ = answer.send(read);
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(StoreError(e.0.clone())));
            }
        }
    }
}

/// Writes `group` (sorted) and answers each step. The decisions of steps on distinct
/// bookings and resources go in one statement, which commits by itself; a step that meets
/// one of them goes in a next statement, and then all of them are one transaction, so
/// that it sees the decision before its own (and finds what it read changed).
async fn commit(c: &Object, mut group: Vec<(Job, Answer<Option<Written>>)>) {
    // Every group takes the rows it locks in one order, so two groups (of two replicas)
    // never wait for each other in a circle.
    group.sort_by(|(a, _), (b, _)| (a.resource, &a.booking.id).cmp(&(b.resource, &b.booking.id)));
    let (jobs, answers): (Vec<Job>, Vec<Answer<Option<Written>>>) = group.into_iter().unzip();
    let statement = match c.prepare_cached(&WRITE).await {
        Ok(s) => s,
        Err(e) => {
            let e = StoreError::from(e);
            for answer in answers {
                let _ = answer.send(Err(StoreError(e.0.clone())));
            }
            return;
        }
    };
    let rounds = rounds(&jobs);
    let params: Vec<Vec<Param<'_>>> = rounds
        .iter()
        .map(|round| step::params(&round.iter().map(|&i| &jobs[i]).collect::<Vec<_>>()))
        .collect();
    // Whether nothing was kept because a statement failed.
    let (written, undone) = if let [one] = &params[..] {
        let written = write(c, &statement, one).await;
        let undone = written.is_err();
        (vec![written], undone)
    } else {
        // BEGIN and every statement go out at once, and the server runs them one after
        // the other: one round trip for all of them.
        let (begun, written) = pipelined(
            c.batch_execute("BEGIN"),
            params.iter().map(|p| write(c, &statement, p)).collect(),
        )
        .await;
        match begun {
            // No transaction: each statement that ran committed by itself, and says so.
            Err(_) => (written, false),
            Ok(()) if written.iter().all(Result::is_ok) => {
                match c.batch_execute("COMMIT").await.map_err(StoreError::from) {
                    Ok(()) => (written, false),
                    // Committed or not is unknown, as for a statement whose connection broke.
                    Err(e) => {
                        let failed = written.iter().map(|_| Err(StoreError(e.0.clone())));
                        (failed.collect(), false)
                    }
                }
            }
            Ok(()) => {
                let _ = c.batch_execute("ROLLBACK").await;
                (written, true)
            }
        }
    };
    if undone && jobs.len() > 1 {
        // A statement failed (a deadlock the server broke, say) and nothing of the group
        // is kept: each step is written again alone, so one that fails takes only itself
        // down.
        for (job, answer) in jobs.iter().zip(answers) {
            let written = write(c, &statement, &step::params(&[job])).await;
            let _ = answer.send(written.map(|mut rows| rows.pop().map(|(_, w)| w)));
        }
        return;
    }
    let mut answered: Vec<Option<Result<Option<Written>, StoreError>>> =
        jobs.iter().map(|_| None).collect();
    for (round, written) in rounds.iter().zip(written) {
        let mut rows = match written {
            Ok(rows) => rows
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            Err(e) => {
                for &i in round {
                    answered[i] = Some(Err(StoreError(e.0.clone())));
                }
                continue;
            }
        };
        for &i in round {
            answered[i] = Some(Ok(rows.remove(&jobs[i].booking.id)));
        }
    }
    for (answer, written) in answers.into_iter().zip(answered) {
        let _ = answer.send(written.expect("every step is in a round"));
    }
}

/// Splits `jobs` into rounds in which no booking and no resource comes twice, keeping
/// the order: the indexes of each round's steps.
fn rounds(jobs: &[Job]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(Vec<usize>, HashSet<&str>, HashSet<i64>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (id, resource) = (job.booking.id.as_str(), job.resource);
        // After the last round that holds either, so that the steps of one booking or
        // resource are written in their order.
        let after = rounds
            .iter()
            .rposition(|(_, ids, resources)| ids.contains(id) || resources.contains(&resource))
            .map_or(0, |r| r + 1);
        if after == rounds.len() {
            rounds.push((Vec::new(), HashSet::new(), HashSet::new()));
        }
        let (steps, ids, resources) = &mut rounds[after];
        steps.push(i);
        ids.insert(id);
        resources.insert(resource);
    }
    rounds.into_iter().map(|(steps, ..)| steps).collect()
}

/// Runs one [`WRITE`]: the bookings written, each with how it left its row.
async fn write(
    c: &Object,
    statement: &Statement,
    params: &[Param<'_>],
) -> Result<Vec<(String, Written)>, StoreError> {
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
    let rows = c.query(statement, &params).await?;
    rows.iter()
        .map(|r| {
            let written = Written {
                row_version: r.try_get(1)?,
                resource_version: r.try_get(2)?,
            };
            Ok((r.try_get(0)?, written))
        })
        .collect()
}

/// Runs `first` and then `rest` concurrently, polling them in that order, so that each
/// sends its request on the connection in that order; their outputs, once all are done.
async fn pipelined<A: Future, B: Future>(first: A, rest: Vec<B>) -> (A::Output, Vec<B::Output>) {
    let mut first = std::pin::pin!(first);
    let mut first_out = None;
    let mut rest: Vec<Pin<Box<B>>> = rest.into_iter().map(Box::pin).collect();
    let mut rest_out: Vec<Option<B::Output>> = rest.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        if first_out.is_none() {
            match first.as_mut().poll(cx) {
                Poll::Ready(out) => first_out = Some(out),
                Poll::Pending => pending = true,
            }
        }
        for (f, out) in rest.iter_mut().zip(rest_out.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(o) => *out = Some(o),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    (
        first_out.expect("done"),
        rest_out.into_iter().map(|o| o.expect("done")).collect(),
    )
}
