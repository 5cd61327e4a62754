//! `revmesh-authority ssf register`: a stream at a Shared Signals transmitter (OpenID SSF 1.0
//! §7–§8): its metadata, stream creation for the events revmesh acts on, a verification
//! request, and the stream's status.

use crate::config::{SsfAction, SsfArgs};
use crate::doors::ssf::set::{Event, KNOWN};
use revmesh_runtime::http_client::{Answer, Client};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

const PUSH: &str = "urn:ietf:rfc:8935";
const POLL: &str = "urn:ietf:rfc:8936";

/// `revmesh-authority ssf …`
pub fn run(a: &SsfArgs) -> ExitCode {
    match register(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn register(a: &SsfArgs) -> Result<(), String> {
    let SsfAction::Register { config_url, token_file, push_url, push_token_file, poll, events, ca_file } =
        &a.action;
    let tls = revmesh_runtime::http_client::tls_config(ca_file.as_deref())?;
    let client = Client::new(Some(tls), Duration::from_secs(5), Duration::from_secs(30), 1 << 20);
    let token = crate::doors::ssf::poll::read_token(token_file)?;
    let bearer = format!("Bearer {token}");
    let call = |method: http::Method, url: &str, body: Option<Value>| -> Result<Answer, String> {
        let mut headers = vec![("authorization", bearer.as_str()), ("accept", "application/json")];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        client.send_blocking(method, url, &headers, body.into()).map_err(|e| format!("{url}: {e}"))
    };
    let json_of = |a: &Answer, url: &str| -> Result<Value, String> {
        serde_json::from_slice(&a.body).map_err(|e| format!("{url}: the answer is not JSON: {e}"))
    };

    let answer = call(http::Method::GET, config_url, None)?;
    if answer.status != 200 {
        return Err(format!("{config_url}: answered {}: {}", answer.status, answer.text()));
    }
    let meta = json_of(&answer, config_url)?;
    let endpoint = |k: &str| meta[k].as_str().map(str::to_owned);
    let issuer = endpoint("issuer").ok_or("the metadata names no `issuer`")?;
    let streams =
        endpoint("configuration_endpoint").ok_or("the metadata names no `configuration_endpoint`")?;
    let method = if *poll { POLL } else { PUSH };
    let supported: Vec<&str> = meta["delivery_methods_supported"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !supported.is_empty() && !supported.contains(&method) {
        return Err(format!(
            "the transmitter does not offer {method} delivery (it offers {})",
            supported.join(", ")
        ));
    }
    let requested: Vec<String> = if events.is_empty() {
        KNOWN.iter().filter(|(e, _)| *e != Event::Verification).map(|(_, u)| (*u).to_owned()).collect()
    } else {
        events.clone()
    };
    let delivery = match push_url {
        Some(url) => {
            let mut d = json!({"method": PUSH, "endpoint_url": url});
            if let Some(f) = push_token_file {
                d["authorization_header"] =
                    json!(format!("Bearer {}", crate::doors::ssf::poll::read_token(f)?));
            }
            d
        }
        None => json!({"method": POLL}),
    };
    let body = json!({"delivery": delivery, "events_requested": requested, "description": "revmesh"});
    let answer = call(http::Method::POST, &streams, Some(body))?;
    if !matches!(answer.status, 200 | 201) {
        return Err(format!("creating the stream: {streams} answered {}: {}", answer.status, answer.text()));
    }
    let stream = json_of(&answer, &streams)?;
    let id = stream["stream_id"].as_str().ok_or("the new stream has no `stream_id`")?.to_owned();
    let delivered: Vec<&str> = stream["events_delivered"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("stream {id} at {issuer}");
    println!("delivery {method}");
    println!("events delivered: {}", delivered.len());
    for e in &delivered {
        println!("  {e}");
    }
    let missing: Vec<&String> = requested.iter().filter(|e| !delivered.contains(&e.as_str())).collect();
    for e in missing {
        eprintln!("warning: the transmitter will not deliver {e}");
    }
    if let Some(url) = stream["delivery"]["endpoint_url"].as_str().filter(|_| *poll) {
        println!("poll endpoint {url}");
        println!(
            "# start the authority with --ssf-poll {url} --ssf-poll-token-file {}",
            token_file.display()
        );
    }
    if let Some(verify) = endpoint("verification_endpoint") {
        let state = hex::encode(rand::random::<[u8; 12]>());
        let answer = call(http::Method::POST, &verify, Some(json!({"stream_id": id, "state": state})))?;
        match answer.status {
            200 | 204 => {
                println!("verification requested: state {state} (GET /v1/ssf/status shows it once received)")
            }
            s => eprintln!("warning: the verification request was answered {s}: {}", answer.text()),
        }
    }
    if let Some(status) = endpoint("status_endpoint") {
        let url = format!("{status}?stream_id={id}");
        let answer = call(http::Method::GET, &url, None)?;
        let status = json_of(&answer, &url).ok().and_then(|v| v["status"].as_str().map(str::to_owned));
        println!("status {}", status.as_deref().unwrap_or("unknown"));
    }
    Ok(())
}
