//! The principal of a client that authenticated with a TLS certificate, as Kafka's default
//! `ssl.principal.mapping.rules` gives it: `User:` and the certificate's subject in RFC 2253
//! form (Java's `X500Principal.getName()`): the relative distinguished names last first,
//! separated by commas, multi-valued ones joined by `+`, attribute types by their RFC 2253
//! keywords (CN, L, ST, O, OU, C, STREET, DC, UID; others as dotted OIDs), special
//! characters escaped with a backslash.

use x509_parser::prelude::{FromDer, X509Certificate};

/// `User:<subject>` of a DER certificate (already verified by the TLS handshake).
pub fn certificate_principal(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("cannot read the client certificate: {e}"))?;
    let subject = cert
        .subject()
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!("#{}", hex(atv.attr_value().data)),
                    };
                    format!("{}={value}", keyword(&oid).unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!("User:{subject}"))
}

/// RFC 2253's keyword of an attribute type, as Java names it.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,` `+` `"` `\` `<` `>` `;` escaped, and a leading `#` or space and
/// a trailing space.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#lead"), "\\#lead");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("plain"), "plain");
    }

    /// `openssl req -x509 -newkey ec -subj "/C=US/O=ottla, Inc./OU=test+UID=u1/CN=test-client"
    /// -multivalue-rdn`, DER in base64.
    const CERT: &str = "\
MIICCTCCAa+gAwIBAgIUEt97vFYEPfVLRBJPe//G+4sNp2YwCgYIKoZIzj0EAwIwWjELMAkGA1UEBhMCVVMxFDAS\
BgNVBAoMC290dGxhLCBJbmMuMR8wCwYDVQQLDAR0ZXN0MBAGCgmSJomT8ixkAQEMAnUxMRQwEgYDVQQDDAt0ZXN0\
LWNsaWVudDAeFw0yNjEyMDIxMzU0NDhaFw0zNjExMjkxMzU0NDhaMFoxCzAJBgNVBAYTAlVTMRQwEgYDVQQKDAtv\
dHRsYSwgSW5jLjEfMAsGA1UECwwEdGVzdDAQBgoJkiaJk/IsZAEBDAJ1MTEUMBIGA1UEAwwLdGVzdC1jbGllbnQw\
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATziqow2wDzzbadJHxrR0RUuw8h9ozITZhye736P9gH+ubzbsRnPv0m\
7W3tcV4uaL3ZxEvmJz4mD5ztv87jNcG+o1MwUTAdBgNVHQ4EFgQUFIvzoI6uEdWpEQTc+LbBsttsRtowHwYDVR0j\
BBgwFoAUFIvzoI6uEdWpEQTc+LbBsttsRtowDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAzKVa\
5x1m7DM1y7+tTXuHIjDon5UdpBwaGmWKiELbnnkCIDAAnOpymc31RdkdMn2+gFIoWOGMEf95DZzD8poidpvi";

    #[test]
    fn the_subject_reads_as_java_names_it() {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(CERT)
            .unwrap();
        // Last RDN first; a multi-valued RDN in its encoded order, as Java's X500Principal.
        assert_eq!(
            certificate_principal(&der).unwrap(),
            "User:CN=test-client,OU=test+UID=u1,O=ottla\\, Inc.,C=US"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(certificate_principal(b"not a certificate").is_err());
        assert!(certificate_principal(&[]).is_err());
    }
}
