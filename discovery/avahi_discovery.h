#pragma once
// AvahiDiscovery: the Linux backend of discovery/discovery.h, on avahi-client (which talks to
// the system's avahi-daemon over the D-Bus system bus; $DBUS_SYSTEM_BUS_ADDRESS is honoured)
// driven by the libuv loop through UvAvahiPoll.
//
// The client is created with AVAHI_CLIENT_NO_FAIL: when no avahi-daemon runs, it waits for one
// to appear, and the first time mDNS is not reachable (no system bus or no daemon) the object
// logs ONE Warn line, "no mDNS (avahi-daemon not reachable): using static peers only". When the
// daemon appears (or comes back after a restart) the service is published and browsing starts
// (again). A lost client is recreated after a second.
//
// Publishing: one entry group with the service on every interface and protocol; on a name
// collision the instance is renamed (avahi_alternative_service_name) and logged.
// Browsing: every instance (interface x protocol) of a service is resolved and kept resolving,
// so TXT changes arrive as kUpdated. One peer per service name; its address is taken from an
// IPv4 resolution when there is one.
//
// Threads: the loop thread (as UvAvahiPoll). Destroy before the loop; the loop must run once more.

#include <memory>
#include <optional>
#include <string>

#include "discovery/discovery.h"

namespace pl {

class AvahiDiscovery : public Discovery {
 public:
  explicit AvahiDiscovery(uv_loop_t* loop);
  ~AvahiDiscovery() override;

  Status publish(const ServiceRecord& record) override;
  Status updateTxt(const TxtRecords& txt) override;
  Status browse(BrowseCallback callback) override;
  bool available() const override;

  // The instance name in use (differs from the published one after a collision).
  std::string publishedName() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
