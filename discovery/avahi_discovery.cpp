// AvahiDiscovery: see avahi_discovery.h.

#include "discovery/avahi_discovery.h"

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/address.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>

#include <atomic>
#include <map>
#include <tuple>

#include "core/util/log.h"
#include "discovery/avahi_poll.h"
#include "core/util/uv_handle.h"

namespace pl {
namespace {

// "Once" per process: a node has one discovery object, and a restarted client must not repeat it.
std::atomic<bool> saidUnavailable{false};

void sayUnavailable(const char* why) {
  if (saidUnavailable.exchange(true)) return;
  PL_LOG_WARN("no mDNS (avahi-daemon not reachable): using static peers only [%s]", why);
}

AvahiStringList* toStringList(const TxtRecords& txt) {
  AvahiStringList* list = nullptr;
  // avahi_string_list_add_* prepends: add in reverse so the records keep their order.
  for (auto it = txt.rbegin(); it != txt.rend(); ++it) {
    list = avahi_string_list_add_pair(list, it->first.c_str(), it->second.c_str());
  }
  return list;
}

TxtRecords fromStringList(AvahiStringList* list) {
  TxtRecords txt;
  for (AvahiStringList* l = list; l != nullptr; l = avahi_string_list_get_next(l)) {
    char* key = nullptr;
    char* value = nullptr;
    size_t size = 0;
    if (avahi_string_list_get_pair(l, &key, &value, &size) != 0) continue;
    txt.emplace_back(key, value != nullptr ? std::string(value, size) : std::string());
    avahi_free(key);
    avahi_free(value);
  }
  return txt;
}

}  // namespace

struct AvahiDiscovery::Impl {
  // One browse result: a service name seen on one interface with one protocol.
  using InstanceKey = std::tuple<std::string, AvahiIfIndex, AvahiProtocol, std::string>;
  struct Instance {
    AvahiServiceResolver* resolver = nullptr;
    std::optional<DiscoveredPeer> resolved;
    AvahiProtocol addressProtocol = AVAHI_PROTO_UNSPEC;
    // The address family asked of the resolver: IPv4 first (a node listening on 0.0.0.0 or an
    // IPv4 address cannot be reached at the IPv6 address that avahi also publishes for its
    // host, e.g. ::1 on lo with publish-aaaa-on-ipv4), any family when it has no IPv4 one.
    AvahiProtocol family = AVAHI_PROTO_INET;
  };

  uv_loop_t* loop;
  UvAvahiPoll poll;
  AvahiClient* client = nullptr;
  AvahiClientState state = AVAHI_CLIENT_CONNECTING;
  UvHandle<uv_timer_t> reconnectTimer;

  std::optional<ServiceRecord> record;  // what to publish
  std::string name;                     // instance name in use
  AvahiEntryGroup* group = nullptr;

  BrowseCallback callback;
  AvahiServiceBrowser* browser = nullptr;
  std::map<InstanceKey, Instance> instances;
  std::map<std::string, DiscoveredPeer> peers;  // as last reported, by service name

  explicit Impl(uv_loop_t* l) : loop(l), poll(l) {
    reconnectTimer.init(loop, uv_timer_init);
    reconnectTimer->data = this;
    uv_unref(reconnectTimer.base());  // never keeps the loop alive on its own
  }

  ~Impl() { dropClient(); }

  void connect() {
    int error = 0;
    state = AVAHI_CLIENT_CONNECTING;
    AvahiClient* c = avahi_client_new(poll.avahiPoll(), AVAHI_CLIENT_NO_FAIL, &Impl::onClientState,
                                      this, &error);
    if (c == nullptr) {
      sayUnavailable(avahi_strerror(error));
      scheduleReconnect(5000);
      return;
    }
    client = c;
    if (state == AVAHI_CLIENT_CONNECTING) sayUnavailable("no daemon on the system bus");
  }

  // Frees the client and everything it owns (group, browser, resolvers).
  void dropClient() {
    if (client == nullptr) return;
    avahi_client_free(client);  // frees group, browser and resolvers too
    client = nullptr;
    group = nullptr;
    browser = nullptr;
    instances.clear();
  }

  void scheduleReconnect(uint64_t ms) {
    uv_timer_start(
        reconnectTimer.get(),
        [](uv_timer_t* t) {
          auto* self = static_cast<Impl*>(t->data);
          self->dropClient();
          self->connect();
        },
        ms, 0);
  }

  static void onClientState(AvahiClient* c, AvahiClientState s, void* userdata) {
    auto* self = static_cast<Impl*>(userdata);
    if (self->client == nullptr) self->client = c;  // called from inside avahi_client_new
    self->state = s;
    switch (s) {
      case AVAHI_CLIENT_S_RUNNING:
        PL_LOG_DEBUG("mDNS: avahi-daemon running");
        self->registerService();
        self->startBrowser();
        break;
      case AVAHI_CLIENT_S_COLLISION:
      case AVAHI_CLIENT_S_REGISTERING:
        // The host name is being (re)registered: withdraw until running again.
        if (self->group != nullptr) avahi_entry_group_reset(self->group);
        break;
      case AVAHI_CLIENT_CONNECTING:
        sayUnavailable("no daemon on the system bus");
        break;
      case AVAHI_CLIENT_FAILURE:
        PL_LOG_WARN("mDNS: avahi client failed (%s); reconnecting",
                    avahi_strerror(avahi_client_errno(c)));
        // Not from inside the client's own callback: free it on the next loop iteration.
        self->scheduleReconnect(1000);
        break;
    }
  }

  void registerService() {
    if (client == nullptr || state != AVAHI_CLIENT_S_RUNNING || !record) return;
    if (group == nullptr) {
      group = avahi_entry_group_new(client, &Impl::onGroupState, this);
      if (group == nullptr) {
        PL_LOG_WARN("mDNS: cannot create an entry group: %s",
                    avahi_strerror(avahi_client_errno(client)));
        return;
      }
    }
    if (!avahi_entry_group_is_empty(group)) return;
    for (int attempt = 0; attempt < 16; ++attempt) {
      AvahiStringList* txt = toStringList(record->txt);
      int rc = avahi_entry_group_add_service_strlst(group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                                    AvahiPublishFlags(0), name.c_str(),
                                                    kServiceType, nullptr, nullptr, record->port,
                                                    txt);
      avahi_string_list_free(txt);
      if (rc == AVAHI_ERR_COLLISION) {
        rename();
        continue;
      }
      if (rc < 0) {
        PL_LOG_WARN("mDNS: cannot publish '%s': %s", name.c_str(), avahi_strerror(rc));
        return;
      }
      rc = avahi_entry_group_commit(group);
      if (rc < 0) PL_LOG_WARN("mDNS: cannot publish '%s': %s", name.c_str(), avahi_strerror(rc));
      return;
    }
  }

  void rename() {
    char* next = avahi_alternative_service_name(name.c_str());
    PL_LOG_INFO("mDNS: service name '%s' is taken; using '%s'", name.c_str(), next);
    name = next;
    avahi_free(next);
  }

  static void onGroupState(AvahiEntryGroup* g, AvahiEntryGroupState s, void* userdata) {
    auto* self = static_cast<Impl*>(userdata);
    if (self->group == nullptr) self->group = g;
    switch (s) {
      case AVAHI_ENTRY_GROUP_ESTABLISHED:
        PL_LOG_INFO("mDNS: published '%s' (%s)", self->name.c_str(), kServiceType);
        break;
      case AVAHI_ENTRY_GROUP_COLLISION:
        self->rename();
        avahi_entry_group_reset(g);
        self->registerService();
        break;
      case AVAHI_ENTRY_GROUP_FAILURE:
        PL_LOG_WARN("mDNS: publishing '%s' failed: %s", self->name.c_str(),
                    avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
        break;
      default:
        break;
    }
  }

  void startBrowser() {
    if (client == nullptr || state != AVAHI_CLIENT_S_RUNNING || !callback || browser != nullptr) {
      return;
    }
    browser = avahi_service_browser_new(client, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, kServiceType,
                                        nullptr, AvahiLookupFlags(0), &Impl::onBrowse, this);
    if (browser == nullptr) {
      PL_LOG_WARN("mDNS: cannot browse %s: %s", kServiceType,
                  avahi_strerror(avahi_client_errno(client)));
    }
  }

  static void onBrowse(AvahiServiceBrowser* b, AvahiIfIndex iface, AvahiProtocol protocol,
                       AvahiBrowserEvent event, const char* serviceName, const char* type,
                       const char* domain, AvahiLookupResultFlags, void* userdata) {
    auto* self = static_cast<Impl*>(userdata);
    switch (event) {
      case AVAHI_BROWSER_NEW: {
        InstanceKey key{serviceName, iface, protocol, domain};
        if (self->instances.count(key) != 0) return;
        Instance& inst = self->instances[key];
        inst.resolver = avahi_service_resolver_new(self->client, iface, protocol, serviceName, type,
                                                   domain, inst.family, AvahiLookupFlags(0),
                                                   &Impl::onResolve, self);
        if (inst.resolver == nullptr) {
          PL_LOG_WARN("mDNS: cannot resolve '%s': %s", serviceName,
                      avahi_strerror(avahi_client_errno(self->client)));
        }
        break;
      }
      case AVAHI_BROWSER_REMOVE: {
        auto it = self->instances.find(InstanceKey{serviceName, iface, protocol, domain});
        if (it == self->instances.end()) return;
        if (it->second.resolver != nullptr) avahi_service_resolver_free(it->second.resolver);
        self->instances.erase(it);
        self->report(serviceName);
        break;
      }
      case AVAHI_BROWSER_FAILURE:
        PL_LOG_WARN("mDNS: browsing failed: %s",
                    avahi_strerror(avahi_client_errno(avahi_service_browser_get_client(b))));
        break;
      default:
        break;
    }
  }

  static void onResolve(AvahiServiceResolver*, AvahiIfIndex iface, AvahiProtocol protocol,
                        AvahiResolverEvent event, const char* serviceName, const char* type,
                        const char* domain, const char*, const AvahiAddress* address,
                        uint16_t port, AvahiStringList* txt, AvahiLookupResultFlags,
                        void* userdata) {
    auto* self = static_cast<Impl*>(userdata);
    auto it = self->instances.find(InstanceKey{serviceName, iface, protocol, domain});
    if (it == self->instances.end()) return;
    Instance& inst = it->second;
    if (event == AVAHI_RESOLVER_FAILURE && inst.family == AVAHI_PROTO_INET && !inst.resolved) {
      // No IPv4 address for the host: resolve again, any family.
      if (inst.resolver != nullptr) avahi_service_resolver_free(inst.resolver);
      inst.family = AVAHI_PROTO_UNSPEC;
      inst.resolver = avahi_service_resolver_new(self->client, iface, protocol, serviceName, type,
                                                 domain, inst.family, AvahiLookupFlags(0),
                                                 &Impl::onResolve, self);
      return;
    }
    if (event != AVAHI_RESOLVER_FOUND || address == nullptr) {
      PL_LOG_DEBUG("mDNS: cannot resolve '%s' (yet)", serviceName);
      return;
    }
    char text[AVAHI_ADDRESS_STR_MAX];
    avahi_address_snprint(text, sizeof(text), address);
    DiscoveredPeer peer;
    peer.instanceName = serviceName;
    peer.host = text;
    peer.port = port;
    peer.txt = fromStringList(txt);
    it->second.resolved = std::move(peer);
    it->second.addressProtocol = address->proto;
    self->report(serviceName);
  }

  // Recomputes the peer `serviceName` from its instances and reports what changed.
  void report(const std::string& serviceName) {
    const DiscoveredPeer* best = nullptr;
    bool bestIsV4 = false;
    for (const auto& [key, inst] : instances) {
      if (std::get<0>(key) != serviceName || !inst.resolved) continue;
      bool v4 = inst.addressProtocol == AVAHI_PROTO_INET;
      if (best == nullptr || (v4 && !bestIsV4)) {
        best = &*inst.resolved;
        bestIsV4 = v4;
      }
    }
    auto known = peers.find(serviceName);
    if (best == nullptr) {
      if (known == peers.end()) return;
      DiscoveredPeer last = std::move(known->second);
      peers.erase(known);
      if (callback) callback(PeerEvent::kRemoved, last);
      return;
    }
    if (known == peers.end()) {
      DiscoveredPeer copy = *best;
      peers[serviceName] = copy;
      if (callback) callback(PeerEvent::kFound, copy);
      return;
    }
    if (known->second.host == best->host && known->second.port == best->port &&
        known->second.txt == best->txt) {
      return;
    }
    known->second = *best;
    DiscoveredPeer copy = *best;
    if (callback) callback(PeerEvent::kUpdated, copy);
  }
};

AvahiDiscovery::AvahiDiscovery(uv_loop_t* loop) : impl_(std::make_unique<Impl>(loop)) {
  impl_->connect();
}

AvahiDiscovery::~AvahiDiscovery() = default;

Status AvahiDiscovery::publish(const ServiceRecord& record) {
  if (record.instanceName.empty() || record.instanceName.size() > 63) {
    return Error{"mDNS service name '" + record.instanceName + "' must be 1 to 63 bytes"};
  }
  for (const auto& [key, value] : record.txt) {
    if (key.empty() || key.size() + 1 + value.size() > kMaxTxtStringBytes) {
      return Error{"TXT record '" + key + "' is empty or longer than 255 bytes"};
    }
  }
  impl_->record = record;
  impl_->name = record.instanceName;
  if (impl_->group != nullptr) avahi_entry_group_reset(impl_->group);
  impl_->registerService();
  return Status();
}

Status AvahiDiscovery::updateTxt(const TxtRecords& txt) {
  if (!impl_->record) return Error{"mDNS: updateTxt() before publish()"};
  for (const auto& [key, value] : txt) {
    if (key.empty() || key.size() + 1 + value.size() > kMaxTxtStringBytes) {
      return Error{"TXT record '" + key + "' is empty or longer than 255 bytes"};
    }
  }
  impl_->record->txt = txt;
  AvahiEntryGroup* group = impl_->group;
  if (group == nullptr || avahi_entry_group_is_empty(group)) return Status();  // published later
  AvahiStringList* list = toStringList(txt);
  int rc = avahi_entry_group_update_service_txt_strlst(
      group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, AvahiPublishFlags(0), impl_->name.c_str(),
      kServiceType, nullptr, list);
  avahi_string_list_free(list);
  if (rc < 0) return Error{std::string("mDNS: cannot update TXT: ") + avahi_strerror(rc)};
  return Status();
}

Status AvahiDiscovery::browse(BrowseCallback callback) {
  if (impl_->callback) return Error{"mDNS: browse() called twice"};
  impl_->callback = std::move(callback);
  impl_->startBrowser();
  return Status();
}

bool AvahiDiscovery::available() const {
  return impl_->client != nullptr && impl_->state == AVAHI_CLIENT_S_RUNNING;
}

std::string AvahiDiscovery::publishedName() const { return impl_->name; }

std::unique_ptr<Discovery> makeDiscovery(uv_loop_t* loop) {
  return std::make_unique<AvahiDiscovery>(loop);
}

}  // namespace pl
