// Certificates made at test time with OpenSSL's C API: a CA, certificates it signs (with a
// subjectAltName of 127.0.0.1 for servers), and ones that are already expired, written as
// PEM files (keys mode 0600, as qbusd requires of its key).
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace qbus::testing {

class TestPki {
 public:
  struct Issued {
    std::string cert;  // PEM file
    std::string key;   // PEM file, mode 0600
  };

  explicit TestPki(std::string dir) : dir_(std::move(dir)) {}

  // A self-signed CA named `name`.
  Issued ca(const std::string& name) { return issue(name, nullptr, true, 0, 30); }
  // A certificate for `cn` signed by `ca`, valid from `from_days` to `to_days` from now
  // (negative: in the past); a server certificate also names 127.0.0.1 in its SAN.
  Issued leaf(const std::string& cn, const Issued& ca, bool server, long from_days = 0,
              long to_days = 30) {
    return issue(cn, &ca, false, from_days, to_days, server);
  }

 private:
  using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  using Cert = std::unique_ptr<X509, decltype(&X509_free)>;

  static void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("test PKI: ") + what + " failed");
  }
  static void add_ext(X509* x, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(ext != nullptr && X509_add_ext(x, ext, -1) == 1, "extension");
    X509_EXTENSION_free(ext);
  }
  static Cert read_cert(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "r");
    check(f != nullptr, "open cert");
    Cert c(PEM_read_X509(f, nullptr, nullptr, nullptr), X509_free);
    std::fclose(f);
    check(c != nullptr, "read cert");
    return c;
  }
  static Key read_key(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "r");
    check(f != nullptr, "open key");
    Key k(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr), EVP_PKEY_free);
    std::fclose(f);
    check(k != nullptr, "read key");
    return k;
  }

  Issued issue(const std::string& cn, const Issued* ca, bool is_ca, long from_days, long to_days,
               bool server = false) {
    Key key(EVP_EC_gen("P-256"), EVP_PKEY_free);
    check(key != nullptr, "key generation");
    Cert x(X509_new(), X509_free);
    X509_set_version(x.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x.get()), ++serial_);
    X509_gmtime_adj(X509_getm_notBefore(x.get()), from_days * 86400 - 60);
    X509_gmtime_adj(X509_getm_notAfter(x.get()), to_days * 86400);
    X509_set_pubkey(x.get(), key.get());
    X509_NAME* name = X509_get_subject_name(x.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    Cert issuer_cert(nullptr, X509_free);
    Key issuer_key(nullptr, EVP_PKEY_free);
    if (ca) {
      issuer_cert = read_cert(ca->cert);
      issuer_key = read_key(ca->key);
    }
    X509* issuer = ca ? issuer_cert.get() : x.get();
    X509_set_issuer_name(x.get(), X509_get_subject_name(issuer));
    if (is_ca) {
      add_ext(x.get(), issuer, NID_basic_constraints, "critical,CA:TRUE");
      add_ext(x.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
      add_ext(x.get(), issuer, NID_basic_constraints, "critical,CA:FALSE");
      if (server) add_ext(x.get(), issuer, NID_subject_alt_name, "IP:127.0.0.1");
    }
    check(X509_sign(x.get(), ca ? issuer_key.get() : key.get(), EVP_sha256()) > 0, "signing");

    Issued out{dir_ + "/" + std::to_string(serial_) + ".pem",
               dir_ + "/" + std::to_string(serial_) + ".key"};
    FILE* f = std::fopen(out.cert.c_str(), "w");
    check(f && PEM_write_X509(f, x.get()) == 1, "write cert");
    std::fclose(f);
    f = std::fopen(out.key.c_str(), "w");
    check(f && ::chmod(out.key.c_str(), 0600) == 0, "create key file");
    check(PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "write key");
    std::fclose(f);
    return out;
  }

  std::string dir_;
  long serial_ = 0;
};

}  // namespace qbus::testing
