//! `/nfc/<lease>/<disk-N.vmdk>`: the URLs a lease's deviceUrls name. A caller with a session
//! cookie (or Basic credentials) holding VApp.Export (export leases) or VApp.Import (import
//! leases) on the lease's VM GETs an export's disks or PUTs/POSTs an import's. As on ESXi,
//! whose NFC URLs are tickets, an upload that brings no credentials at all is admitted on the
//! strength of the URL: its lease id is a random UUID only the lease's holder was given, and
//! it works only while that lease is ready (stock clients such as Ansible's vmware_deploy_ovf
//! upload that way); credentials that are brought must be valid and hold the privilege. Only
//! the file names the lease lists are served; nothing in the URL is ever used as a path, and
//! a lease's URLs reach that lease's disks only.

use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::{download, upload, Direction, Lease, LeaseState};
use crate::host::Host;
use crate::http_files::{self, authenticated_user, plain, Body};

type Refusal = Response<http_body_util::Full<Bytes>>;

/// Whether the request carries a session cookie or Basic credentials.
fn has_credentials(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    headers.contains_key(hyper::header::COOKIE)
        || headers.contains_key(hyper::header::AUTHORIZATION)
}

/// Serves one `/nfc/...` request.
pub async fn serve(host: Arc<Host>, request: Request<Incoming>) -> Response<Body> {
    let (lease, index) = match admit(&host, &request).await {
        Ok(found) => found,
        Err(refusal) => return http_files::boxed(refusal),
    };
    match lease.direction {
        Direction::Export => download::send(&host, lease, index),
        Direction::Import => upload::receive(&host, lease, index, request).await,
    }
}

/// The lease and disk the request is for, once the caller, the method and the lease's state
/// allow it.
async fn admit(
    host: &Arc<Host>,
    request: &Request<Incoming>,
) -> Result<(Arc<Lease>, usize), Refusal> {
    let not_found = || plain(StatusCode::NOT_FOUND, "no such lease file");
    let rest = request
        .uri()
        .path()
        .strip_prefix("/nfc/")
        .ok_or_else(not_found)?;
    let (id, target) = rest.split_once('/').ok_or_else(not_found)?;
    let lease = host.leases.get(id).ok_or_else(not_found)?;
    let index = lease
        .disks
        .iter()
        .position(|d| d.target_id == target)
        .ok_or_else(not_found)?;
    let (methods, privilege) = match lease.direction {
        Direction::Export => (&[Method::GET][..], "VApp.Export"),
        Direction::Import => (&[Method::PUT, Method::POST][..], "VApp.Import"),
    };
    if !methods.contains(request.method()) {
        return Err(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            match lease.direction {
                Direction::Export => "an export lease's disks are downloaded (GET)",
                Direction::Import => "an import lease's disks are uploaded (PUT or POST)",
            },
        ));
    }
    match authenticated_user(host, request).await {
        Some(user) if !host.user_holds_any(&user, &[privilege], &lease.entity) => {
            return Err(plain(
                StatusCode::FORBIDDEN,
                format!("{user} lacks {privilege} on {}", lease.entity),
            ));
        }
        Some(_) => {}
        None if lease.direction == Direction::Import && !has_credentials(request) => {}
        None => {
            return Err(plain(
                StatusCode::UNAUTHORIZED,
                "log in first (session cookie)",
            ))
        }
    }
    match lease.state() {
        LeaseState::Ready => {}
        LeaseState::Initializing => {
            return Err(plain(StatusCode::FORBIDDEN, "the lease is not ready yet"))
        }
        LeaseState::Done | LeaseState::Error => return Err(not_found()),
    }
    lease.touch();
    Ok((lease, index))
}
