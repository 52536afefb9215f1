//! Subscriptions to topics: [`Client::subscribe`] and the [`Subscription`]
//! it answers, a stream of the events published to its topics on any silo
//! of the cluster while its connection lasts.
//!
//! Neither the silo nor this client ever waits for a slow reader: past the
//! silo's buffer for the connection, or past [`FEED_CAPACITY`] deliveries
//! waiting here, events are missed, and the subscription yields
//! [`Delivery::Missed`] with how many before the next event. Sequence
//! numbers per publisher make any other gap visible too.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rio_protocol::{Event, Request, Response};
use tokio::sync::mpsc;

use crate::ClientError;
use crate::connection::{Client, Session};

/// Deliveries that may wait in a subscription for its reader.
pub const FEED_CAPACITY: usize = 16 * 1024;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event; a publisher's events come in the order it published them.
    Event(Event),
    /// This many events were lost just before the next delivery: the
    /// subscriber did not keep up.
    Missed(u64),
}

/// The reader task's end of one subscription.
pub(crate) struct Feed {
    sender: mpsc::Sender<Delivery>,
    /// Lost here (the reader was behind), not yet told.
    missed: u64,
}

impl Feed {
    /// Passes on an events frame without waiting: what does not fit is
    /// counted, and told before the next delivery that fits.
    pub(crate) fn hand_over(&mut self, missed: u64, events: Vec<Event>) {
        self.missed += missed;
        for event in events {
            if self.missed > 0 {
                match self.sender.try_send(Delivery::Missed(self.missed)) {
                    Ok(()) => self.missed = 0,
                    Err(_) => {
                        self.missed += 1;
                        continue;
                    }
                }
            }
            if self.sender.try_send(Delivery::Event(event)).is_err() {
                self.missed += 1;
            }
        }
    }
}

/// A subscription to topics. Read it with [`Subscription::next`] or as a
/// [`futures_core::Stream`]; it ends with one `Err` when its connection
/// does (the silo restarted, the connection broke): subscribe again then.
/// [`Subscription::unsubscribe`] ends it at the silo and waits for the
/// silo to say so; dropping it ends it at the silo too, without waiting.
/// Either leaves the connection's other requests and subscriptions alone.
pub struct Subscription {
    id: u64,
    receiver: mpsc::Receiver<Delivery>,
    session: Arc<Session>,
    client: Client,
    ended: bool,
    /// Still to be ended at the silo when dropped.
    open_at_silo: bool,
}

impl Client {
    /// Subscribes to `topics` (e.g. `Room/lobby`, an object's own topic):
    /// returns once the silo has taken the subscription, so every event
    /// committed after that reaches it.
    pub async fn subscribe<T: AsRef<str>>(
        &self,
        topics: &[T],
    ) -> Result<Subscription, ClientError> {
        let (sender, receiver) = mpsc::channel(FEED_CAPACITY);
        let feed = Feed { sender, missed: 0 };
        let topics = topics
            .iter()
            .map(|topic| topic.as_ref().to_string())
            .collect();
        let (response, session, id) = self
            .send_request(Request::Subscribe { topics }, Some(feed), None)
            .await?;
        match response {
            Response::Subscribed => Ok(Subscription {
                id,
                receiver,
                session,
                client: self.clone(),
                ended: false,
                open_at_silo: true,
            }),
            other => {
                session.shared.pending().feeds.remove(&id);
                Err(ClientError::Unexpected(format!("{other:?}")))
            }
        }
    }
}

impl Subscription {
    /// The next delivery; `Some(Err(..))` once when the connection ended,
    /// then `None`.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        std::future::poll_fn(|context| self.poll_delivery(context)).await
    }

    fn poll_delivery(
        &mut self,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Delivery, ClientError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(context) {
            Poll::Ready(Some(delivery)) => Poll::Ready(Some(Ok(delivery))),
            Poll::Ready(None) => {
                self.ended = true;
                let reason = self.session.shared.closed_reason();
                Poll::Ready(Some(Err(ClientError::Closed(reason))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends the subscription at the silo; deliveries already received are
    /// dropped with it.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.open_at_silo = false;
        let request = Request::Unsubscribe {
            subscription: self.id,
        };
        self.session.shared.pending().feeds.remove(&self.id);
        // On the subscription's own connection, which may not be the
        // client's current one.
        match self.client.request_on(&self.session, request).await? {
            Response::Noted => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl Drop for Subscription {
    /// Ends the subscription at the silo as well: a long-lived client that
    /// subscribes and drops would otherwise have the silo keep sending
    /// events nobody reads until the connection ends.
    fn drop(&mut self) {
        if !self.open_at_silo {
            return;
        }
        let shared = &self.session.shared;
        shared.pending().feeds.remove(&self.id);
        shared.send_unanswered(Request::Unsubscribe {
            subscription: self.id,
        });
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_delivery(context)
    }
}
