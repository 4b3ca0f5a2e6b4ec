//! What a page handler asks for in its arguments instead of repeating a
//! preamble: who is looking (`Visit`), a signed-in user (`SignedIn`), one
//! who may design (`Designer`) or buy data (`Buyer`), and a form whose
//! CSRF token checked out (`Form`, `Upload`).
//!
//! The signed-in pages' route middleware (`require_session`) looks the
//! session up once and leaves the `Caller` in the request's extensions, as
//! the API's authentication does; these extractors read it from there, so
//! no page looks a session up twice.

use super::{CSRF_COOKIE, Chrome, PageError, Viewer, check_csrf};
use crate::domain::user::{Role, Scope};
use crate::http::auth::{Caller, MaybeCaller, Via};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{LocalBoxFuture, Ready, ready};

/// Who opens a page: the session's user, or nobody (tokens are for
/// scripts; a stale or foreign cookie makes a visitor anonymous rather
/// than an error), and the chrome to render with.
pub struct Visit {
    pub caller: Option<Caller>,
    pub chrome: Chrome,
}

impl Visit {
    fn new(req: &HttpRequest, caller: Option<Caller>) -> Visit {
        let caller = caller.filter(|c| c.via == Via::Session);
        let (csrf, new_csrf) = match req.cookie(CSRF_COOKIE) {
            Some(c) if c.value().len() == 64 && c.value().bytes().all(|b| b.is_ascii_hexdigit()) => {
                (c.value().to_owned(), false)
            }
            _ => (super::random_token(), true),
        };
        let viewer = caller.as_ref().map(|c| Viewer { username: c.username.clone(), role: c.role });
        Visit { caller, chrome: Chrome { viewer, csrf, new_csrf } }
    }
}

impl FromRequest for Visit {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Visit, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Behind `require_session` the caller is already known.
        if let Some(caller) = req.extensions().get::<Caller>().cloned() {
            let visit = Visit::new(req, Some(caller));
            return Box::pin(async move { Ok(visit) });
        }
        let fut = MaybeCaller::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move { Ok(Visit::new(&req, fut.await.ok().and_then(|c| c.0))) })
    }
}

/// The signed-in user of a page that `require_session` guards.
pub struct SignedIn {
    pub caller: Caller,
    pub chrome: Chrome,
}

impl SignedIn {
    /// The same request as a `Visit`, for what public and signed-in pages
    /// share.
    pub fn visit(&self) -> Visit {
        Visit { caller: Some(self.caller.clone()), chrome: self.chrome.clone() }
    }

    /// Whether the user may buy data (a buyer, or an admin).
    pub fn buys(&self) -> bool {
        self.caller.role == Role::Buyer || self.caller.is_admin()
    }
}

impl FromRequest for SignedIn {
    type Error = PageError;
    type Future = Ready<Result<SignedIn, PageError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req.extensions().get::<Caller>().cloned();
        ready(match caller {
            Some(caller) => {
                let Visit { chrome, .. } = Visit::new(req, Some(caller.clone()));
                Ok(SignedIn { caller, chrome })
            }
            // A page not mounted behind `require_session`: send to sign in.
            None => Err(PageError::SignIn(req.path().to_owned())),
        })
    }
}

/// A signed-in user who may design Spaces; anyone else is refused (403).
pub struct Designer(pub SignedIn);

impl std::ops::Deref for Designer {
    type Target = SignedIn;
    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

impl FromRequest for Designer {
    type Error = PageError;
    type Future = Ready<Result<Designer, PageError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(SignedIn::from_request(req, payload).into_inner().and_then(|user| {
            if user.caller.has_scope(Scope::Design) { Ok(Designer(user)) } else { Err(PageError::Forbidden) }
        }))
    }
}

/// A signed-in user who may buy data; anyone else is refused (403).
pub struct Buyer(pub SignedIn);

impl std::ops::Deref for Buyer {
    type Target = SignedIn;
    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

impl FromRequest for Buyer {
    type Error = PageError;
    type Future = Ready<Result<Buyer, PageError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(
            SignedIn::from_request(req, payload)
                .into_inner()
                .and_then(|user| if user.buys() { Ok(Buyer(user)) } else { Err(PageError::Forbidden) }),
        )
    }
}

/// A form that carries the page's CSRF token.
pub trait CsrfToken {
    fn csrf(&self) -> &str;
}

/// Implements `CsrfToken` for forms with a `csrf: String` field (urlencoded)
/// or a `csrf: Text<String>` field (multipart).
macro_rules! csrf_token {
    (text: $($form:ty),* $(,)?) => {
        $(impl $crate::http::pages::extract::CsrfToken for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
    (multipart: $($form:ty),* $(,)?) => {
        $(impl $crate::http::pages::extract::CsrfToken for $form {
            fn csrf(&self) -> &str {
                &self.csrf.0
            }
        })*
    };
}
pub(crate) use csrf_token;

impl CsrfToken for std::collections::HashMap<String, String> {
    fn csrf(&self) -> &str {
        self.get("csrf").map_or("", String::as_str)
    }
}

/// A form that carries nothing but its CSRF token (a button).
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

csrf_token!(text: CsrfOnly);

/// An urlencoded form whose CSRF token matched (and that came from this
/// origin); checked before the handler runs, so a forged post changes
/// nothing.
pub struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned + CsrfToken + 'static> FromRequest for Form<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Form<T>, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = actix_web::web::Form::<T>::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let form = fut.await?.into_inner();
            check_csrf(&req, form.csrf())?;
            Ok(Form(form))
        })
    }
}

/// A multipart form (an upload) whose CSRF token matched.
pub struct Upload<T>(pub T);

impl<T: actix_multipart::form::MultipartCollect + CsrfToken + 'static> FromRequest for Upload<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Upload<T>, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = actix_multipart::form::MultipartForm::<T>::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let form = fut.await?.into_inner();
            check_csrf(&req, form.csrf())?;
            Ok(Upload(form))
        })
    }
}
