//! A typed client of the admin API, for tests and tools.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use crate::apps::AppSpec;
use crate::calls::CallCounts;
use crate::config::Region;
use crate::faults::Fault;
use crate::oauth::{ConsentOutcome, Decision};
use crate::resource::{RecordId, Resource};
use crate::webhooks::{WebhookDelivery, WebhookInfo, WebhookStatus};

/// How often the `wait`/`settle` helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Talks to the `/__sim/` API of every region of one simulator.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    urls: BTreeMap<Region, String>,
}

impl AdminClient {
    /// A client for a simulator whose regions listen at `urls` (e.g. one started by the
    /// binary).
    pub fn new(urls: BTreeMap<Region, String>) -> AdminClient {
        AdminClient {
            http: reqwest::Client::new(),
            urls,
        }
    }

    fn url(&self, region: Region, path: &str) -> anyhow::Result<String> {
        let base = self
            .urls
            .get(&region)
            .with_context(|| format!("region {region} is not served"))?;
        Ok(format!("{}/__sim{path}", base.trim_end_matches('/')))
    }

    /// Any region's URL, for the global endpoints.
    fn global_url(&self, path: &str) -> anyhow::Result<String> {
        let region = *self.urls.keys().next().context("no region is served")?;
        self.url(region, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .context("calling the simulator's admin API")?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("simulator admin API answered {status}: {body}")
    }

    async fn post<T: DeserializeOwned>(
        &self,
        url: String,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let response = self.send(self.http.post(url).json(body)).await?;
        Ok(response.json().await?)
    }

    async fn post_empty(&self, url: String, body: &impl Serialize) -> anyhow::Result<()> {
        self.send(self.http.post(url).json(body)).await.map(drop)
    }

    pub async fn register_app(&self, region: Region, app: &AppSpec) -> anyhow::Result<()> {
        self.post_empty(self.url(region, "/apps")?, app).await
    }

    /// Plays the person on Clio's consent page for `authorize_url` (sent to the region
    /// listener the URL points at), as Clio user `user_id` (a user id, or the 1-based
    /// position among the region's users).
    pub async fn consent(
        &self,
        authorize_url: &str,
        user_id: i64,
        decision: Decision,
    ) -> anyhow::Result<ConsentOutcome> {
        self.consent_in_account(authorize_url, 1, user_id, decision)
            .await
    }

    /// [`AdminClient::consent`] by a user of `account` (1-based, see
    /// `SimConfig::accounts`): the grant's tokens read that account's records.
    pub async fn consent_in_account(
        &self,
        authorize_url: &str,
        account: u32,
        user_id: i64,
        decision: Decision,
    ) -> anyhow::Result<ConsentOutcome> {
        let url = Url::parse(authorize_url).context("authorize_url is not a URL")?;
        let origin = url.origin().ascii_serialization();
        let body = json!({
            "authorize_url": authorize_url,
            "account": account,
            "user_id": user_id,
            "decision": decision,
        });
        self.post(format!("{origin}/__sim/consent"), &body).await
    }

    pub async fn calls(&self) -> anyhow::Result<CallCounts> {
        let response = self.send(self.http.get(self.global_url("/calls")?)).await?;
        Ok(response.json().await?)
    }

    pub async fn reset_calls(&self) -> anyhow::Result<()> {
        self.send(self.http.delete(self.global_url("/calls")?))
            .await
            .map(drop)
    }

    /// Revokes every grant `user_id` gave app `client_id`; returns how many.
    pub async fn revoke_grants_of(
        &self,
        region: Region,
        client_id: &str,
        user_id: i64,
    ) -> anyhow::Result<u64> {
        let body = json!({"client_id": client_id, "user_id": user_id});
        let answer: Value = self
            .post(self.url(region, "/grants/revoke")?, &body)
            .await?;
        Ok(answer["revoked"].as_u64().unwrap_or(0))
    }

    /// Revokes the grant behind an access token; returns 1, or 0 if there was none.
    pub async fn revoke_token(&self, region: Region, access_token: &str) -> anyhow::Result<u64> {
        let body = json!({"access_token": access_token});
        let answer: Value = self
            .post(self.url(region, "/grants/revoke")?, &body)
            .await?;
        Ok(answer["revoked"].as_u64().unwrap_or(0))
    }

    pub async fn inject(&self, region: Region, fault: Fault) -> anyhow::Result<()> {
        self.post_empty(self.url(region, "/faults")?, &fault).await
    }

    pub async fn clear_faults(&self, region: Region) -> anyhow::Result<()> {
        self.send(self.http.delete(self.url(region, "/faults")?))
            .await
            .map(drop)
    }

    /// Moves the simulated clock (code and token expiry, edit stamps) forward.
    pub async fn advance_clock(&self, by: Duration) -> anyhow::Result<()> {
        let body = json!({"seconds": by.as_secs()});
        self.post_empty(self.global_url("/clock/advance")?, &body)
            .await
    }

    /// Starts every token's rate-limit window afresh in the region.
    pub async fn reset_rate_limits(&self, region: Region) -> anyhow::Result<()> {
        self.post_empty(self.url(region, "/rate-limits/reset")?, &json!({}))
            .await
    }

    /// Adds a record (or replaces the one its `id` names); returns its id.
    pub async fn create_record(
        &self,
        region: Region,
        resource: Resource,
        record: Value,
    ) -> anyhow::Result<RecordId> {
        let answer: Value = self
            .post(self.url(region, &format!("/records/{resource}"))?, &record)
            .await?;
        Ok(RecordId::from(&answer["id"]))
    }

    /// Changes fields of a record (bumping `etag` and `updated_at`); returns the record.
    pub async fn update_record(
        &self,
        region: Region,
        resource: Resource,
        id: &str,
        change: Value,
    ) -> anyhow::Result<Value> {
        let url = self.url(region, &format!("/records/{resource}/{id}"))?;
        let answer: Value = self
            .send(self.http.patch(url).json(&change))
            .await?
            .json()
            .await?;
        Ok(answer["data"].clone())
    }

    /// The stored record, all fields, as the simulator holds it.
    pub async fn record(
        &self,
        region: Region,
        resource: Resource,
        id: &str,
    ) -> anyhow::Result<Value> {
        let url = self.url(region, &format!("/records/{resource}/{id}"))?;
        let answer: Value = self.send(self.http.get(url)).await?.json().await?;
        Ok(answer["data"].clone())
    }

    /// From now on list pages show `text` verbatim in place of the record (whatever
    /// `fields` asks for): JSON no `Value` can hold, such as a lone surrogate (`"\ud800"`)
    /// or nesting deeper than 128 levels. The text should keep the record's `id`.
    pub async fn set_raw_record(
        &self,
        region: Region,
        resource: Resource,
        id: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let url = self.url(region, &format!("/records/{resource}/{id}/raw"))?;
        self.send(self.http.put(url).body(text.to_owned()))
            .await
            .map(drop)
    }

    pub async fn delete_record(
        &self,
        region: Region,
        resource: Resource,
        id: &str,
    ) -> anyhow::Result<()> {
        let url = self.url(region, &format!("/records/{resource}/{id}"))?;
        self.send(self.http.delete(url)).await.map(drop)
    }

    /// From now on, `user_id`'s listings of `resource` leave out the records `ids` (as Clio
    /// does with records restricted from a user); replaces what was hidden from that user,
    /// and an empty list shows everything again.
    pub async fn hide_records(
        &self,
        region: Region,
        user_id: i64,
        resource: Resource,
        ids: &[&str],
    ) -> anyhow::Result<()> {
        let body = json!({"user_id": user_id, "resource": resource, "hidden_ids": ids});
        self.send(self.http.post(self.url(region, "/visibility")?).json(&body))
            .await
            .map(drop)
    }

    /// The activities created through `POST /api/v4/activities` in `account` (1-based) of
    /// the region, oldest first, as stored now (`GET /__sim/activities/created?account=N`).
    pub async fn created_activities(
        &self,
        region: Region,
        account: u32,
    ) -> anyhow::Result<Vec<Value>> {
        let url = self.url(region, &format!("/activities/created?account={account}"))?;
        let answer: Value = self.send(self.http.get(url)).await?.json().await?;
        answer["data"]
            .as_array()
            .cloned()
            .context("data missing from the answer")
    }

    /// Live records of a resource right now.
    pub async fn count(&self, region: Region, resource: Resource) -> anyhow::Result<u64> {
        let url = self.url(region, &format!("/records/{resource}/count"))?;
        let answer: Value = self.send(self.http.get(url)).await?.json().await?;
        answer["count"]
            .as_u64()
            .context("count missing from the answer")
    }

    /// Every app's webhook subscriptions in `account` (1-based) of the region, expired and
    /// suspended ones included, with status, `expires_at` and the handshake's answer.
    pub async fn webhooks(&self, region: Region, account: u32) -> anyhow::Result<Vec<WebhookInfo>> {
        let url = self.url(region, &format!("/webhooks?account={account}"))?;
        let answer: Value = self.send(self.http.get(url)).await?.json().await?;
        Ok(serde_json::from_value(answer["data"].clone())?)
    }

    /// One subscription of the region (any account), as [`AdminClient::webhooks`] shows it.
    pub async fn webhook(&self, region: Region, webhook_id: i64) -> anyhow::Result<WebhookInfo> {
        let url = self.url(region, "/webhooks")?;
        let answer: Value = self.send(self.http.get(url)).await?.json().await?;
        let all: Vec<WebhookInfo> = serde_json::from_value(answer["data"].clone())?;
        all.into_iter()
            .find(|info| info.id == webhook_id)
            .with_context(|| format!("no webhook {webhook_id} in {region}"))
    }

    /// Polls until the subscription has `status` (after its handshake, say); errs after
    /// `timeout` with what it last saw.
    pub async fn wait_for_webhook_status(
        &self,
        region: Region,
        webhook_id: i64,
        status: WebhookStatus,
        timeout: Duration,
    ) -> anyhow::Result<WebhookInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.webhook(region, webhook_id).await?;
            if info.status == status {
                return Ok(info);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("webhook {webhook_id} is still {:?}: {info:?}", info.status);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The region's webhook deliveries (of one subscription, or all), oldest first, with
    /// every attempt and the receiver's status codes.
    pub async fn webhook_deliveries(
        &self,
        region: Region,
        webhook_id: Option<i64>,
    ) -> anyhow::Result<Vec<WebhookDelivery>> {
        Ok(self.deliveries_now(region, webhook_id).await?.1)
    }

    async fn deliveries_now(
        &self,
        region: Region,
        webhook_id: Option<i64>,
    ) -> anyhow::Result<(bool, Vec<WebhookDelivery>)> {
        let path = match webhook_id {
            Some(id) => format!("/webhooks/deliveries?webhook_id={id}"),
            None => "/webhooks/deliveries".to_owned(),
        };
        let answer: Value = self
            .send(self.http.get(self.url(region, &path)?))
            .await?
            .json()
            .await?;
        let settled = answer["settled"].as_bool().unwrap_or(false);
        Ok((settled, serde_json::from_value(answer["data"].clone())?))
    }

    /// Polls until the region's webhooks have settled (no handshake being sent, no
    /// delivery waiting to be sent or retried; held ones aside) and returns every
    /// delivery. Errs after `timeout`. Changes made before the call are already queued
    /// when it starts, so this waits for their outcome.
    pub async fn settle_webhooks(
        &self,
        region: Region,
        timeout: Duration,
    ) -> anyhow::Result<Vec<WebhookDelivery>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (settled, deliveries) = self.deliveries_now(region, None).await?;
            if settled {
                return Ok(deliveries);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("webhooks of {region} did not settle: {deliveries:?}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Sends delivery `delivery_id` again, same bytes and signature (a replay, as an
    /// attacker who recorded it would); returns the replay's delivery id.
    pub async fn replay_webhook_delivery(
        &self,
        region: Region,
        delivery_id: u64,
    ) -> anyhow::Result<u64> {
        let url = self.url(
            region,
            &format!("/webhooks/deliveries/{delivery_id}/replay"),
        )?;
        let answer: Value = self.post(url, &json!({})).await?;
        answer["id"].as_u64().context("id missing from the answer")
    }

    /// Sends `body` verbatim to the webhook's URL, signed with its shared secret, once;
    /// returns the delivery id.
    pub async fn deliver_raw_webhook(
        &self,
        region: Region,
        webhook_id: i64,
        body: &str,
    ) -> anyhow::Result<u64> {
        let url = self.url(region, &format!("/webhooks/{webhook_id}/raw"))?;
        let answer: Value = self
            .send(self.http.post(url).body(body.to_owned()))
            .await?
            .json()
            .await?;
        answer["id"].as_u64().context("id missing from the answer")
    }

    /// Fault `webhook_unsigned`: each of the region's next `count` deliveries is preceded
    /// by a forged copy without `X-Hook-Signature`.
    pub async fn forge_unsigned_webhooks(&self, region: Region, count: u32) -> anyhow::Result<()> {
        self.inject(region, Fault::WebhookUnsigned { count }).await
    }

    /// Fault `webhook_bad_signature`: each of the next `count` deliveries is preceded by a
    /// copy signed with a key that is not the shared secret.
    pub async fn forge_badly_signed_webhooks(
        &self,
        region: Region,
        count: u32,
    ) -> anyhow::Result<()> {
        self.inject(region, Fault::WebhookBadSignature { count })
            .await
    }

    /// Fault `webhook_duplicate`: the next `count` deliveries are each sent twice.
    pub async fn duplicate_webhooks(&self, region: Region, count: u32) -> anyhow::Result<()> {
        self.inject(region, Fault::WebhookDuplicate { count }).await
    }

    /// Fault `webhook_out_of_order`: each of the next `count` deliveries is held until its
    /// subscription's next delivery has been queued, then sent after it.
    pub async fn reorder_webhooks(&self, region: Region, count: u32) -> anyhow::Result<()> {
        self.inject(region, Fault::WebhookOutOfOrder { count })
            .await
    }
}
