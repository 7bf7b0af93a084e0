#include "tls_config.hpp"

#include <grp.h>
#include <pwd.h>

#include <optional>
#include <set>
#include <stdexcept>
#include <vector>

namespace qbus::config::detail {
namespace {

using json = nlohmann::json;

struct Bad : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Bad(path + ": " + what);
}

// Keys of `o` (at `path`) other than `known` are errors, as everywhere in the file.
void only(const json& o, const std::string& path, std::initializer_list<const char*> known) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const char* k : known)
      ok = ok || it.key() == k;
    if (!ok) bad(path + "." + it.key(), "unknown setting");
  }
}

std::string path_field(const json& o, const std::string& path, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) return {};
  if (!it->is_string())
    bad(path + "." + key, std::string("must be a string, not ") + it->type_name());
  auto v = it->get<std::string>();
  if (!v.empty() && v.front() != '/') bad(path + "." + key, "must be an absolute path");
  return v;
}

// The passwd entry of a user name or uid, with the user's groups; nullopt when there is
// none. getpwnam_r/getpwuid_r with a growing buffer: reloads parse off the broker thread.
struct User {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::vector<std::uint32_t> groups;
};
std::optional<User> find_user(const std::string* name, std::uint32_t uid) {
  std::vector<char> buf(1024);
  while (buf.size() <= (1u << 20)) {
    struct passwd entry {};
    struct passwd* found = nullptr;
    const int e = name ? ::getpwnam_r(name->c_str(), &entry, buf.data(), buf.size(), &found)
                       : ::getpwuid_r(uid, &entry, buf.data(), buf.size(), &found);
    if (e == ERANGE) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (e != 0 || !found) return std::nullopt;
    User u{found->pw_uid, found->pw_gid, {}};
    int n = 64;
    std::vector<gid_t> gids(static_cast<std::size_t>(n));
    while (::getgrouplist(found->pw_name, found->pw_gid, gids.data(), &n) < 0 && n < 65536) {
      gids.resize(static_cast<std::size_t>(n) * 2);
      n = static_cast<int>(gids.size());
    }
    gids.resize(static_cast<std::size_t>(std::max(n, 0)));
    for (gid_t g : gids)
      if (g != u.gid) u.groups.push_back(g);
    return u;
  }
  return std::nullopt;
}

std::uint32_t id_field(const json& v, const std::string& path) {
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() > 0xFFFFFFFEu) {
    bad(path, "must be an id from 0 to 4294967294");
  }
  return static_cast<std::uint32_t>(v.get<std::uint64_t>());
}

TlsClientSettings read_client(const json& j, const std::string& path) {
  if (!j.is_object()) bad(path, std::string("must be an object, not ") + j.type_name());
  only(j, path, {"cn", "user", "uid", "gid"});
  TlsClientSettings c;
  auto cn = j.find("cn");
  if (cn == j.end() || !cn->is_string() || cn->get<std::string>().empty()) {
    bad(path + ".cn", "must be the client certificate's subject common name (a non-empty string)");
  }
  c.cn = cn->get<std::string>();
  const auto user = j.find("user");
  const auto uid = j.find("uid");
  if ((user == j.end()) == (uid == j.end())) bad(path, "needs exactly one of user or uid");
  if (user != j.end()) {
    if (!user->is_string()) bad(path + ".user", "must be a user name");
    const auto name = user->get<std::string>();
    auto u = find_user(&name, 0);
    if (!u) bad(path + ".user", "unknown user '" + name + "'");
    c.uid = u->uid;
    c.gid = u->gid;
    c.groups = std::move(u->groups);
  } else {
    c.uid = id_field(*uid, path + ".uid");
    // A uid with a passwd entry brings its groups; one without is only itself.
    if (auto u = find_user(nullptr, c.uid)) {
      c.gid = u->gid;
      c.groups = std::move(u->groups);
    } else {
      c.gid = c.uid;
    }
  }
  if (auto gid = j.find("gid"); gid != j.end()) c.gid = id_field(*gid, path + ".gid");
  // Root may manage every queue and region and passes the system bus's baseline: a key
  // file copied off some remote machine must not carry that.
  if (c.uid == 0)
    bad(path, "maps '" + c.cn + "' to root (uid 0); a client certificate may not act as root");
  return c;
}

}  // namespace

std::string read_tls(const json& j, TlsSettings& out) {
  const std::string path = "tcp.tls";
  try {
    if (!j.is_object()) bad(path, std::string("must be an object, not ") + j.type_name());
    only(j, path, {"certificate", "key", "client_ca", "clients"});
    out.certificate = path_field(j, path, "certificate");
    out.key = path_field(j, path, "key");
    out.client_ca = path_field(j, path, "client_ca");
    if (out.certificate.empty() != out.key.empty()) {
      bad(out.key.empty() ? path + ".key" : path + ".certificate",
          "is required with tcp.tls." + std::string(out.key.empty() ? "certificate" : "key"));
    }
    if (!out.client_ca.empty() && out.certificate.empty()) {
      bad(path + ".client_ca", "needs tcp.tls.certificate and tcp.tls.key");
    }
    if (auto clients = j.find("clients"); clients != j.end()) {
      if (!clients->is_array()) {
        bad(path + ".clients", std::string("must be an array, not ") + clients->type_name());
      }
      if (clients->size() > kMaxTlsClients) {
        bad(path + ".clients", "holds more than " + std::to_string(kMaxTlsClients) + " entries");
      }
      // Without a CA nothing vouches for a certificate's name, so a map would be a list of
      // names anyone could claim.
      if (!clients->empty() && out.client_ca.empty()) {
        bad(path + ".clients", "needs tcp.tls.client_ca (only verified certificates are mapped)");
      }
      std::set<std::string> seen;
      for (std::size_t i = 0; i < clients->size(); ++i) {
        const auto at = path + ".clients[" + std::to_string(i) + "]";
        auto c = read_client((*clients)[i], at);
        if (!seen.insert(c.cn).second) bad(at + ".cn", "'" + c.cn + "' is mapped twice");
        out.clients.push_back(std::move(c));
      }
    }
  } catch (const Bad& e) {
    return e.what();
  }
  return {};
}

json tls_json(const TlsSettings& t) {
  json clients = json::array();
  for (const auto& c : t.clients) {
    clients.push_back(json{{"cn", c.cn}, {"uid", c.uid}, {"gid", c.gid}});
  }
  return json{{"certificate", t.certificate},
              {"key", t.key},
              {"client_ca", t.client_ca},
              {"clients", std::move(clients)}};
}

}  // namespace qbus::config::detail
