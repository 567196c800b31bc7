// The one deadline for awaited work: whichever of the work and the expiry comes first wins. The timer
// never keeps the process alive, and is cleared as soon as the work settles.
export async function raceDeadline<T, E>(work: Promise<T>, ms: number, onExpiry: () => E): Promise<T | E> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<E>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(onExpiry());
      } catch (fault) {
        reject(fault);
      }
    }, ms);
    timer.unref();
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
