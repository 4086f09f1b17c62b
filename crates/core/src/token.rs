//! Api tokens: HS256 JWTs whose `jti` is a row in `api_tokens`.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "the-eye";

/// Signing failed (only possible with a broken key).
pub type SignError = jsonwebtoken::errors::Error;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    /// With `events:read`: read every application's events, not only the token's own.
    #[serde(rename = "events:read:all")]
    EventsReadAll,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::EventsWrite, Scope::EventsRead, Scope::EventsReadAll];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::EventsRead => "events:read",
            Scope::EventsReadAll => "events:read:all",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown scope `{s}`: expected events:write, events:read or events:read:all"
                )
            })
    }
}

/// The claims inside every api token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The application the token belongs to.
    pub sub: Uuid,
    /// The token's id: the primary key in `api_tokens`, used for revocation.
    pub jti: Uuid,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub scopes: HashSet<Scope>,
}

impl Claims {
    pub fn new(
        application_id: Uuid,
        token_id: Uuid,
        scopes: HashSet<Scope>,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            sub: application_id,
            jti: token_id,
            iss: ISSUER.into(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
            scopes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is malformed or its signature is not valid")]
    Invalid,
}

/// Signs and verifies tokens with one HS256 key. The algorithm is pinned: a token that names
/// any other algorithm (including `none`) is refused.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(expires_in: chrono::Duration) -> Claims {
        let now = Utc::now();
        Claims::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            HashSet::from([Scope::EventsWrite]),
            now,
            now + expires_in,
        )
    }

    #[test]
    fn a_signed_token_verifies_to_the_same_claims() {
        let keys = TokenKeys::new(SECRET);
        let claims = claims(chrono::Duration::hours(1));
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token), Ok(claims));
    }

    #[test]
    fn expired_foreign_and_other_algorithm_tokens_are_refused() {
        let keys = TokenKeys::new(SECRET);
        let expired = keys.sign(&claims(chrono::Duration::seconds(-5))).unwrap();
        assert_eq!(keys.verify(&expired), Err(TokenError::Expired));

        let other = TokenKeys::new(b"another-secret-another-secret-xx");
        let foreign = other.sign(&claims(chrono::Duration::hours(1))).unwrap();
        assert_eq!(keys.verify(&foreign), Err(TokenError::Invalid));

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(chrono::Duration::hours(1)),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys.verify(&hs512), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not.a.token"), Err(TokenError::Invalid));
    }

    #[test]
    fn scopes_parse_from_their_names_only() {
        assert_eq!("events:read".parse(), Ok(Scope::EventsRead));
        assert_eq!("events:read:all".parse(), Ok(Scope::EventsReadAll));
        assert!("events:delete".parse::<Scope>().is_err());
    }
}
