//! Which collateral a quote needs: its TEE, the FMSPC and the PCK CA type, read from the PCK
//! certificate in the quote's certification data.

use std::fmt;

use x509_parser::der_parser::ber::BerObjectContent;
use x509_parser::der_parser::oid;
use x509_parser::prelude::*;

use crate::Error;

/// The TEE a quote comes from; it selects the `/sgx/` or `/tdx/` API family for TCB info and QE
/// identity (CRLs always come from `/sgx/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tee {
    /// Intel SGX.
    Sgx,
    /// Intel TDX.
    Tdx,
}

impl Tee {
    /// The path segment of the PCS API: `sgx` or `tdx`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Sgx => "sgx",
            Tee::Tdx => "tdx",
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which Intel PCK CA issued the PCK certificate; it selects the PCK CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PckCa {
    /// "Intel SGX PCK Processor CA" (client and most server platforms).
    Processor,
    /// "Intel SGX PCK Platform CA" (multi-package platforms).
    Platform,
}

impl PckCa {
    /// The `ca=` query value: `processor` or `platform`.
    pub fn as_str(self) -> &'static str {
        match self {
            PckCa::Processor => "processor",
            PckCa::Platform => "platform",
        }
    }
}

impl fmt::Display for PckCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to fetch for one quote: the TEE, the platform's FMSPC and the PCK CA type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CollateralRequest {
    /// The TEE of the quote.
    pub tee: Tee,
    /// The FMSPC (family-model-stepping-platform-custom SKU) of the platform.
    pub fmspc: [u8; 6],
    /// The CA that issued the PCK certificate.
    pub ca: PckCa,
}

impl CollateralRequest {
    /// The FMSPC as upper-case hex, as the PCS API spells it.
    pub fn fmspc_hex(&self) -> String {
        hex::encode_upper(self.fmspc)
    }

    /// What `quote` needs: its TEE, and FMSPC and CA type from the PCK certificate chain in its
    /// certification data.
    pub fn for_quote(quote: &coffer_evidence::Quote) -> Result<Self, Error> {
        let tee = match quote.tee() {
            coffer_evidence::Tee::Sgx => Tee::Sgx,
            coffer_evidence::Tee::Tdx => Tee::Tdx,
        };
        let fmspc = quote.fmspc().map_err(|e| Error::Request(e.to_string()))?;
        let ca = match quote.pck_ca().map_err(|e| Error::Request(e.to_string()))? {
            coffer_evidence::PckCa::Processor => PckCa::Processor,
            coffer_evidence::PckCa::Platform => PckCa::Platform,
        };
        Ok(CollateralRequest { tee, fmspc, ca })
    }

    /// Reads FMSPC and CA type from the PCK certificate chain of a quote (PEM, leaf first, as
    /// certification data type 5 carries it).
    pub fn from_pck_chain_pem(tee: Tee, chain_pem: &[u8]) -> Result<Self, Error> {
        let first = x509_parser::pem::Pem::iter_from_buffer(chain_pem)
            .next()
            .ok_or_else(|| Error::Request("the PCK certificate chain is empty".into()))?
            .map_err(|e| Error::Request(format!("the PCK certificate chain is not PEM: {e}")))?;
        Self::from_pck_cert_der(tee, &first.contents)
    }

    /// Reads FMSPC and CA type from a DER PCK certificate.
    pub fn from_pck_cert_der(tee: Tee, der: &[u8]) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::Request(format!("the PCK certificate does not parse: {e}")))?;
        let issuer_cn = cert
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default();
        let ca = if issuer_cn.contains("Processor") {
            PckCa::Processor
        } else if issuer_cn.contains("Platform") {
            PckCa::Platform
        } else {
            return Err(Error::Request(format!(
                "the PCK certificate's issuer {issuer_cn:?} is neither the PCK Processor CA nor the PCK Platform CA"
            )));
        };
        let sgx_ext_oid = oid!(1.2.840 .113741 .1 .13 .1);
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == sgx_ext_oid)
            .ok_or_else(|| {
                Error::Request(
                    "the PCK certificate has no SGX extensions (OID 1.2.840.113741.1.13.1)".into(),
                )
            })?;
        let fmspc = fmspc_from_sgx_extensions(ext.value).ok_or_else(|| {
            Error::Request("the PCK certificate's SGX extensions carry no 6-byte FMSPC".into())
        })?;
        Ok(CollateralRequest { tee, fmspc, ca })
    }
}

fn fmspc_from_sgx_extensions(value: &[u8]) -> Option<[u8; 6]> {
    let fmspc_oid = oid!(1.2.840 .113741 .1 .13 .1 .4);
    let (_, seq) = x509_parser::der_parser::parse_der(value).ok()?;
    let BerObjectContent::Sequence(items) = &seq.content else {
        return None;
    };
    for item in items {
        let BerObjectContent::Sequence(pair) = &item.content else {
            continue;
        };
        let (Some(id), Some(val)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        if id.as_oid().ok() == Some(&fmspc_oid) {
            let BerObjectContent::OctetString(bytes) = &val.content else {
                return None;
            };
            return <[u8; 6]>::try_from(*bytes).ok();
        }
    }
    None
}
