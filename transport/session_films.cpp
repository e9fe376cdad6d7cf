#include "transport/session_films.h"

#include <optional>

#include "transport/render_session.h"

namespace pl {

kj::Promise<SessionFilm> SessionFilms::at(uint64_t generation, uint32_t spp) {
  auto paf = kj::newPromiseAndFulfiller<SessionFilm>();
  waiters_.push_back(Waiter{generation, spp, kj::mv(paf.fulfiller)});
  settle();
  return kj::mv(paf.promise);
}

std::optional<SessionFilm> SessionFilms::decide(const Waiter& w) const {
  SessionFilm out;
  out.generation = w.generation;
  const uint32_t committed = session_.film().committedSamples();
  if (w.generation != session_.generation()) {
    out.outcome = SessionFilm::Outcome::replaced;
    out.message = "the scene changed before generation " + std::to_string(w.generation) +
                  " reached " + (w.spp ? std::to_string(w.spp) + " spp" : "its end");
    return out;
  }
  const bool finished = session_.generationFinished();
  if (w.spp == 0 ? finished : committed == w.spp) {
    out.spp = committed;
    return out;
  }
  if (w.spp != 0 && !session_.willReach(w.spp)) {
    if (finished && !session_.generationDone()) {
      out.outcome = SessionFilm::Outcome::stopped;
      out.message = "the time limit ended generation " + std::to_string(w.generation) + " at " +
                    std::to_string(committed) + " spp, before " + std::to_string(w.spp);
    } else {
      out.outcome = SessionFilm::Outcome::passed;
      out.message = "generation " + std::to_string(w.generation) + " never holds exactly " +
                    std::to_string(w.spp) + " spp (it holds " + std::to_string(committed) +
                    " and its passes do not stop there)";
    }
    return out;
  }
  return std::nullopt;
}

void SessionFilms::settle() {
  std::shared_ptr<const Film> film;  // one copy for every waiter it settles now
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    std::optional<SessionFilm> decided = decide(*it);
    if (!decided) {
      ++it;
      continue;
    }
    if (decided->outcome == SessionFilm::Outcome::ok) {
      if (film == nullptr) film = std::make_shared<const Film>(session_.film().snapshot());
      decided->film = film;
    }
    it->fulfiller->fulfill(kj::mv(*decided));
    it = waiters_.erase(it);
  }
}

}  // namespace pl
